package policy

import (
	"sync/atomic"

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

// stageMetrics are a stage's metric children, resolved once: a label
// lookup per decision cost more than the decision's cached DNS answers.
type stageMetrics struct {
	latency prometheus.Observer
	none    counterCache // decisions no rule decided (DUNNO)
}

// counterCache holds decisions{stage, action, rule} children of one rule
// (a rule sits in one stage's list) by action, made on first use so that
// only verdicts that happened are exported.
type counterCache [Warn + 1]atomic.Pointer[prometheus.Counter]

func (c *counterCache) get(vec *prometheus.CounterVec, stage Stage, a Action, rule string) prometheus.Counter {
	if a < 0 || int(a) >= len(c) {
		return vec.WithLabelValues(string(stage), a.String(), rule)
	}
	if p := c[a].Load(); p != nil {
		return *p
	}
	ctr := vec.WithLabelValues(string(stage), a.String(), rule)
	c[a].Store(&ctr)
	return ctr
}
