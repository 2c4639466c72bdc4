package prom

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegister(t *testing.T) {
	reg := NewRegistry()
	newVec := func() *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayguard_test_total", Help: "test"}, []string{"k"})
	}
	a := Register(reg, newVec())
	b := Register(reg, newVec())
	if a != b {
		t.Fatal("a second registration of the same metric got a new collector")
	}
	a.WithLabelValues("x").Inc()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	if !names["relayguard_test_total"] || !names["go_goroutines"] || !names["process_open_fds"] {
		t.Fatalf("gathered %v", names)
	}
	// nil: counts, exported nowhere.
	c := Register(nil, prometheus.NewCounter(prometheus.CounterOpts{Name: "relayguard_unexported_total", Help: "x"}))
	c.Inc()
	// One name with another label set is a programming error.
	defer func() {
		if recover() == nil {
			t.Fatal("conflicting registration did not panic")
		}
	}()
	Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayguard_test_total", Help: "test"}, []string{"other"}))
}
