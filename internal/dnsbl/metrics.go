package dnsbl

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	queries *prometheus.CounterVec
	cache   *prometheus.CounterVec
	state   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	return &metrics{
		queries: Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_dnsbl_queries_total", Help: "DNS list queries by zone and result (listed, clean, list_error, temp_error, skipped).",
		}, []string{"zone", "result"})),
		cache: Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_dnsbl_cache_total", Help: "DNS list cache lookups by result (hit, miss).",
		}, []string{"result"})),
		state: Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relayguard_dnsbl_zone_state", Help: "1 for each zone's current health state (unknown, healthy, dead, lists-everything, refusing).",
		}, []string{"zone", "state"})),
	}
}

func (m *metrics) setState(zone string, s State) {
	for i, n := range stateNames {
		v := 0.0
		if State(i) == s {
			v = 1
		}
		m.state.WithLabelValues(zone, n).Set(v)
	}
}

// Register registers c on reg, or returns the collector already registered
// under the same description (several engines in one process share them).
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
	}
	return c
}
