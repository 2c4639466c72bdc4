package queue

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/prom"
)

type metrics struct {
	result *prometheus.CounterVec
	queued prometheus.Gauge
	dsn    *prometheus.CounterVec
	dkim   *prometheus.CounterVec
}

// newMetrics creates the scheduler's metrics, registered with reg (nil: not
// exported).
func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		result: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_delivery_results_total",
			Help: "Delivery attempts per recipient by outcome (delivered, deferred, failed, expired).",
		}, []string{"result"})),
		queued: prom.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relayguard_queue_messages",
			Help: "Messages in the spool at the last rescan.",
		})),
		dsn: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_dsn_total",
			Help: "Delivery status notifications by outcome (sent, suppressed).",
		}, []string{"outcome"})),
		dkim: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_dkim_sign_total",
			Help: "Outbound messages by DKIM signing outcome (signed, no_key, error); one count per message and delivery round.",
		}, []string{"outcome"})),
	}
}
