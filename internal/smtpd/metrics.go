package smtpd

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/prom"
)

// Metrics are the SMTP server's Prometheus metrics.
type Metrics struct {
	Connections *prometheus.CounterVec
	Active      prometheus.Gauge
	Auth        *prometheus.CounterVec
	Rejections  *prometheus.CounterVec
	Spooled     prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// exported).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayguard_smtp_connections_total", Help: "SMTP connections accepted, by listener."}, []string{"listener"}),
		Active:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "relayguard_smtp_connections_active", Help: "SMTP connections open now."}),
		Auth:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayguard_smtp_auth_total", Help: "SMTP AUTH attempts by mechanism and result."}, []string{"mechanism", "result"}),
		Rejections:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayguard_smtp_rejections_total", Help: "SMTP rejections by rule or limit."}, []string{"reason"}),
		Spooled:     prometheus.NewCounter(prometheus.CounterOpts{Name: "relayguard_spool_messages_total", Help: "Messages accepted into the durable spool."}),
	}
	m.Connections = prom.Register(reg, m.Connections)
	m.Active = prom.Register(reg, m.Active)
	m.Auth = prom.Register(reg, m.Auth)
	m.Rejections = prom.Register(reg, m.Rejections)
	m.Spooled = prom.Register(reg, m.Spooled)
	return m
}
