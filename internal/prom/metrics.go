// Package prom is relayguard's one way to register Prometheus metrics.
// A command that exports metrics builds one registry with NewRegistry and
// serves it (serve on its admin listener, policy with --metrics); every
// component that has metrics takes a prometheus.Registerer from its caller
// (an Options or Deps field, or a constructor argument) and registers its
// collectors with Register. A nil Registerer means "not exported" (tests,
// one-shot commands): the collectors count all the same. Nothing registers
// on prometheus.DefaultRegisterer, and nothing replaces it.
package prom

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors, for a command to fill through its components and serve.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Register registers c with reg and returns it; nil reg registers nothing.
// When a collector with the same description is already registered (two
// engines in one process share their metrics), that one is returned. Any
// other registration error is a programming error (one name, two label
// sets) and panics, as prometheus.MustRegister does.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(C); ok {
			return old
		}
	}
	panic(fmt.Sprintf("metrics: registering %T: %v", c, err))
}
