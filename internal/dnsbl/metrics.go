package dnsbl

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/prom"
)

type metrics struct {
	queries   *prometheus.CounterVec
	cache     *prometheus.CounterVec
	cacheHit  prometheus.Counter // cache{result="hit"}, resolved once
	entries   prometheus.Gauge
	evictions prometheus.Counter
	state     *prometheus.GaugeVec
	dnsUp     prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		queries: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_dnsbl_queries_total",
			Help: "DNS list queries by zone and result (listed, clean, list_error, temp_error, skipped; dns_unreachable, failing and not_checked: not asked, answered as a temporary failure).",
		}, []string{"zone", "result"})),
		cache: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_dnsbl_cache_total", Help: "DNS list cache lookups by result (hit, miss).",
		}, []string{"result"})),
		entries: prom.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relayguard_dnsbl_cache_entries", Help: "Client addresses and domains with cached DNS list answers.",
		})),
		evictions: prom.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relayguard_dnsbl_cache_evictions_total", Help: "Cached clients or domains dropped to make room (least recently used first).",
		})),
		state: prom.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relayguard_dnsbl_zone_state", Help: "1 for each zone's current health state (unknown, healthy, dead, lists-everything, refusing, failing).",
		}, []string{"zone", "state"})),
		dnsUp: prom.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relayguard_dnsbl_dns_reachable", Help: "1 while DNS answers, 0 while no list and no parent domain answers (resolver down or cut off: checks answer 4xx, no list is switched off).",
		})),
	}
	m.cacheHit = m.cache.WithLabelValues("hit")
	m.dnsUp.Set(1)
	return m
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
