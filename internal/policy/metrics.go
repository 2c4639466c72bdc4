package policy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/prom"
)

type engineMetrics struct {
	decisions *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	dmarc     *prometheus.CounterVec
}

func newEngineMetrics(reg prometheus.Registerer) *engineMetrics {
	return &engineMetrics{
		decisions: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_policy_decisions_total", Help: "Policy verdicts by stage, action and deciding rule (action warn: warn_if_reject).",
		}, []string{"stage", "action", "rule"})),
		latency: prom.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "relayguard_policy_check_seconds", Help: "Time to evaluate one restriction list.",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5},
		}, []string{"stage"})),
		dmarc: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_dmarc_results_total", Help: "check_dmarc verdicts by DMARC result and the disposition the domain's policy asks for.",
		}, []string{"result", "disposition"})),
	}
}
