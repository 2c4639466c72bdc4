package prom

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is a command's metrics endpoint: /metrics from one registry and
// /healthz (and, on the admin listener, the web console).
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Options add to the metrics endpoint.
type Options struct {
	// Handler serves every other path (the web console); nil: 404.
	Handler http.Handler
	// TLS, when set, makes the listener serve HTTPS with it.
	TLS *tls.Config
	// OnShutdown is called when Run stops the server (to end handlers
	// that stream, which Shutdown would otherwise wait for).
	OnShutdown func()
}

// Listen binds addr (host:port; port 0 picks one) for the metrics of g.
func Listen(addr string, g prometheus.Gatherer) (*Server, error) {
	return ListenWith(addr, g, Options{})
}

// ListenWith binds addr for the metrics of g and what o adds.
func ListenWith(addr string, g prometheus.Gatherer, o Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	if o.Handler != nil {
		mux.Handle("/", o.Handler)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	if o.TLS != nil {
		tc := o.TLS.Clone()
		tc.NextProtos = []string{"h2", "http/1.1"}
		tc.MinVersion = max(tc.MinVersion, tls.VersionTLS12)
		ln = tls.NewListener(ln, tc)
		srv.TLSConfig = tc
	}
	if o.OnShutdown != nil {
		srv.RegisterOnShutdown(o.OnShutdown)
	}
	return &Server{ln: ln, srv: srv}, nil
}

// Close closes the listener (for a command that fails before Run; after
// Run it does nothing useful).
func (s *Server) Close() error { return s.ln.Close() }

// Addr is the address it listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx is done, then lets requests in progress finish (for
// at most 5 seconds) and returns nil; it returns an error only when
// serving fails.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer c()
		s.srv.Shutdown(sctx)
	}()
	err := s.srv.Serve(s.ln)
	cancel()
	<-stopped
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("metrics listener %s: %w", s.ln.Addr(), err)
}
