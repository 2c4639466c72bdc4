package queue

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	result *prometheus.CounterVec
	queued prometheus.Gauge
	dsn    *prometheus.CounterVec
	dkim   *prometheus.CounterVec
}

// register registers c with the default registerer (which `serve` points
// at its own registry) or returns the collector already registered.
func register[T prometheus.Collector](c T) T {
	if err := prometheus.DefaultRegisterer.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(T); ok {
				return old
			}
		}
	}
	return c
}

func newMetrics() *metrics {
	return &metrics{
		result: register(prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_delivery_results_total",
			Help: "Delivery attempts per recipient by outcome (delivered, deferred, failed, expired).",
		}, []string{"result"})),
		queued: register(prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relayguard_queue_messages",
			Help: "Messages in the spool at the last rescan.",
		})),
		dsn: register(prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_dsn_total",
			Help: "Delivery status notifications by outcome (sent, suppressed).",
		}, []string{"outcome"})),
		dkim: register(prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_dkim_sign_total",
			Help: "Outbound messages by DKIM signing outcome (signed, no_key, error); one count per message and delivery round.",
		}, []string{"outcome"})),
	}
}
