package policyd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/listen"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/prom"
)

// Checker is the policy engine as the server sees it.
type Checker interface {
	Check(ctx context.Context, req *policy.Request) policy.Verdict
}

// Server answers policy delegation requests with the engine's verdicts.
type Server struct {
	Engine      Checker
	Logger      *slog.Logger
	IdleTimeout time.Duration // close a connection idle this long; 0: never
	MaxConns    int           // concurrent connections; 0: unlimited
	Registerer  prometheus.Registerer
	// Limits applies the send limits to authenticated and trusted
	// clients; nil: none.
	Limits *Limits

	once sync.Once
	sem  chan struct{}
	reqs *prometheus.CounterVec
	// reqs{result="answered"} and {result="malformed"}, resolved once
	answered, malformed prometheus.Counter
	conns               prometheus.Gauge
	refusedConns        prometheus.Counter
	wg                  sync.WaitGroup
	mu                  sync.Mutex
	active              map[net.Conn]struct{}
	closing             bool
	refusals            refusalLog
}

// refusalLogEvery is how often at most a refused connection is logged: a
// flood of connections past policy.max_connections would otherwise be a
// flood of log lines too. The refusals in between are counted in the next
// line, which is written at the latest when the interval ends (and at once
// in relayguard_policyd_refused_connections_total).
const refusalLogEvery = 10 * time.Second

// refusalLog decides which refused connections are logged (guarded by
// Server.mu).
type refusalLog struct {
	every      time.Duration // refusalLogEvery; shorter in tests
	last       time.Time     // when the last refusal was logged
	suppressed int           // refusals since then, not logged
	pending    *time.Timer   // logs the suppressed ones when the interval ends
}

// refused records one refused connection and reports whether to log it,
// with the number of refusals not logged before it.
func (r *refusalLog) refused(now time.Time) (log bool, before int) {
	every := r.every
	if every == 0 {
		every = refusalLogEvery
	}
	if !r.last.IsZero() && now.Sub(r.last) < every {
		r.suppressed++
		return false, 0
	}
	before, r.last, r.suppressed = r.suppressed, now, 0
	return true, before
}

// flush takes the refusals not logged yet, as a logged line does.
func (r *refusalLog) flush(now time.Time) (before int) {
	before, r.suppressed = r.suppressed, 0
	if before > 0 {
		r.last = now
	}
	return before
}

func (s *Server) init() {
	s.once.Do(func() {
		if s.Logger == nil {
			s.Logger = slog.Default()
		}
		if s.MaxConns > 0 {
			s.sem = make(chan struct{}, s.MaxConns)
		}
		reg := s.Registerer
		s.reqs = prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_policyd_requests_total", Help: "Postfix policy requests by result (answered, malformed).",
		}, []string{"result"}))
		s.answered, s.malformed = s.reqs.WithLabelValues("answered"), s.reqs.WithLabelValues("malformed")
		s.conns = prom.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relayguard_policyd_connections", Help: "Open Postfix policy connections.",
		}))
		s.refusedConns = prom.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relayguard_policyd_refused_connections_total", Help: "Policy connections refused because policy.max_connections were open.",
		}))
		s.active = map[net.Conn]struct{}{}
	})
}

// Listen opens addr: "unix:/path" for a unix socket (a stale socket file is
// replaced, one with a live server behind it is not) or host:port for TCP.
func Listen(addr string) (net.Listener, error) { return listen.Listen("policy listener", addr) }

// Serve accepts connections until ctx ends, then closes the listener and
// every connection and waits for their goroutines.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.init()
	defer s.wg.Wait()
	ctx, cancel := context.WithCancel(ctx) // also ends the closer below when Accept fails for good
	defer cancel()
	s.wg.Go(func() {
		<-ctx.Done()
		ln.Close()
		s.mu.Lock()
		s.closing = true
		for c := range s.active {
			c.Close()
		}
		if s.refusals.pending != nil {
			s.refusals.pending.Stop()
		}
		n := s.refusals.flush(time.Now())
		s.mu.Unlock()
		s.logSuppressedRefusals(n)
	})
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("policy listener %s: %w", ln.Addr(), err)
			}
			// Out of file descriptors (EMFILE), ECONNABORTED...: the
			// listener is fine, this one accept failed. Back off and keep
			// serving, as net/http does; Postfix retries meanwhile.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.Logger.Warn("policy listener: accept failed; retrying", "address", ln.Addr().String(), "error", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		if s.sem != nil {
			select {
			case s.sem <- struct{}{}:
			default:
				s.refuse(c)
				continue
			}
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.active[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.ServeConn(ctx, c)
			s.mu.Lock()
			delete(s.active, c)
			s.mu.Unlock()
			if s.sem != nil {
				<-s.sem
			}
		}()
	}
}

// refuse counts a connection past policy.max_connections, logs it unless
// another refusal was logged less than refusalLogEvery ago, and closes it:
// when the peer sees the close, the refusal is in the metric and the log.
func (s *Server) refuse(c net.Conn) {
	defer c.Close()
	peer := c.RemoteAddr().String()
	s.refusedConns.Inc()
	now := time.Now()
	s.mu.Lock()
	log, before := s.refusals.refused(now)
	if !log && s.refusals.suppressed == 1 && !s.closing {
		// The first refusal not logged: if no other is logged before the
		// interval ends, a line then says how many there were, so that a
		// flood that stops is not reported only with the next one, maybe
		// days later.
		every := s.refusals.every
		if every == 0 {
			every = refusalLogEvery
		}
		s.refusals.pending = time.AfterFunc(s.refusals.last.Add(every).Sub(now), s.flushRefusals)
	}
	s.mu.Unlock()
	if !log {
		return
	}
	if before > 0 {
		s.Logger.Warn("policy connection refused: policy.max_connections reached", "limit", s.MaxConns, "peer", peer, "refused_since_last_logged", before)
		return
	}
	s.Logger.Warn("policy connection refused: policy.max_connections reached", "limit", s.MaxConns, "peer", peer)
}

// flushRefusals logs the refusals not logged when their interval ended
// without another logged one.
func (s *Server) flushRefusals() {
	s.mu.Lock()
	n := 0
	if !s.closing { // the closer logs them
		n = s.refusals.flush(time.Now())
	}
	s.mu.Unlock()
	s.logSuppressedRefusals(n)
}

func (s *Server) logSuppressedRefusals(n int) {
	if n > 0 {
		s.Logger.Warn("policy connections refused: policy.max_connections reached", "limit", s.MaxConns, "refused_since_last_logged", n)
	}
}

// ServeConn answers requests on one connection until the peer closes it,
// it idles out, or a request is malformed (logged, then closed, as
// SMTPD_POLICY_README requires).
//
// The connection's buffers are reused from one request to the next, and
// each answer is one write, or, when the peer has already sent further
// complete requests (pipelining), the answers to all of them are one
// write after the last.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	s.init()
	defer c.Close()
	s.conns.Inc()
	defer s.conns.Dec()
	// A peer that takes no answer for IdleTimeout is idle too: a write
	// waits at most that long, so a client that pipelines requests and
	// never reads cannot hold its connection (and a MaxConns slot) for
	// ever.
	var rw io.ReadWriter = deadlineWriter{c, s.IdleTimeout}
	if r := newRawIO(c, s.IdleTimeout); r != nil {
		rw = r
	}
	cs := &session{s: s, rd: reader{r: bufio.NewReaderSize(rw, MaxLine)}}
	defer func() {
		if len(cs.out) > 0 {
			rw.Write(cs.out) // answers to the requests before the one that ended the connection
		}
	}()
	// The idle deadline is moved at most every idleSlack, not at every
	// request: each move is an operation on the runtime's timer heap, and
	// at 20,000 requests/s a connection that is never idle would make
	// 20,000 of them a second. So a connection is closed after between
	// IdleTimeout and IdleTimeout+idleSlack without a request, never
	// before IdleTimeout.
	slack := idleSlack(s.IdleTimeout)
	var moved time.Time
	for {
		if s.IdleTimeout > 0 {
			if now := time.Now(); now.Sub(moved) >= slack {
				c.SetReadDeadline(now.Add(s.IdleTimeout + slack))
				moved = now
			}
		}
		err := cs.next(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s.Logger.Info("policy connection idle: closed", "peer", c.RemoteAddr().String(), "idle_timeout", s.IdleTimeout)
				return
			}
			if errors.Is(err, ErrMalformed) {
				s.malformed.Inc()
				s.Logger.Warn("policy request malformed: connection closed", "peer", c.RemoteAddr().String(), "error", err)
			}
			return
		}
		if cs.rd.pending() {
			continue
		}
		_, err = rw.Write(cs.out)
		cs.out = cs.out[:0]
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				s.Logger.Info("policy connection not reading its answers: closed", "peer", c.RemoteAddr().String(), "idle_timeout", s.IdleTimeout)
			}
			return
		}
	}
}

// deadlineWriter is a connection without a socket (net.Pipe...) whose
// writes wait at most timeout (0: for ever).
type deadlineWriter struct {
	net.Conn
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	if d.timeout > 0 {
		d.SetWriteDeadline(time.Now().Add(d.timeout))
	}
	return d.Conn.Write(p)
}

// idleSlack is how late an idle connection may be closed: a sixteenth of
// the idle timeout, at most a second.
func idleSlack(idle time.Duration) time.Duration { return min(idle/16, time.Second) }

// session is one connection's state: its reader, the request being
// answered (overwritten by each request) and the answers not yet written.
type session struct {
	s   *Server
	rd  reader
	req policy.Request
	out []byte
}

// next reads one request and appends its answer to out.
func (cs *session) next(ctx context.Context) error {
	if err := cs.rd.read(); err != nil {
		return err
	}
	if err := cs.rd.request(&cs.req); err != nil {
		return err
	}
	v := cs.s.Engine.Check(ctx, &cs.req)
	cs.out = append(cs.out, "action="...)
	// A message the restriction lists refuse is not counted against its
	// sender's limits.
	limited := false
	if v.Action != policy.Reject && v.Action != policy.Defer {
		var a string
		if a, limited = cs.s.Limits.Check(ctx, &cs.req); limited {
			cs.out = append(cs.out, a...)
		}
	}
	if !limited {
		cs.out = appendAction(cs.out, v)
	}
	cs.out = append(cs.out, "\n\n"...)
	cs.s.answered.Inc()
	return nil
}
