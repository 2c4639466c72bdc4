// Package smtpd is relayguard's SMTP front door: MX (RFC 5321), submission
// (RFC 6409) with STARTTLS (RFC 3207), and submissions with implicit TLS
// (RFC 8314), with SMTP AUTH (RFC 4954).
//
// The protocol engine is written by hand rather than on emersion/go-smtp:
// relayguard must control every reply code (RFC 4954's 538 5.7.11, 501
// 5.5.2, 500 5.5.6, Postfix's "Relay access denied" wording), refuse
// clients before the banner, detect pregreet and bare-LF smuggling, and
// delay failed AUTH per session, none of which go-smtp exposes.
package smtpd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/limits"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/sasl"
)

// Users is the account lookup smtpd needs (internal/userdb).
type Users interface {
	LocalRecipientExists(ctx context.Context, local, domain string) (bool, error)
	MayUseSender(ctx context.Context, user, addr string, localDomains []string) (bool, error)
}

// Deps are the server's collaborators. Users, Creds and Spool are required.
type Deps struct {
	Users  Users
	Creds  sasl.Credentials
	Spool  *queue.Spool
	TLS    *tls.Config // nil: no STARTTLS, no submissions listener
	Events event.Sink
	Guard  Guard
	Policy PolicyChecker
	Limits SendLimiter
	// Accounts refuses suspended accounts and guessed usernames from new
	// networks after the SASL exchange; nil: none.
	Accounts AccountGate
	Log      *slog.Logger
	Metrics  *Metrics
	// PopBeforeSMTP, if set, permits relay from a client address that
	// recently logged in over POP3/IMAP (legacy, off by default).
	PopBeforeSMTP func(ip netip.Addr) bool
	// Counter keeps the per-client rates (unknown recipients) in rolling
	// windows, shared by several servers when it is the Redis store's
	// (limits.FallbackCounter). nil: in process memory.
	Counter limits.Counter
}

// Server runs the configured SMTP listeners.
type Server struct {
	set  atomic.Pointer[settings]
	deps Deps
	log  *slog.Logger
	// leaf is the certificate of a static deps.TLS (Certificates set); with
	// GetCertificate (certs.Provider) each handshake keeps its own.
	leaf *x509.Certificate

	ml  *maillog.Logger
	cid atomic.Uint64 // last connection id

	mu       sync.Mutex
	total    int
	perIP    map[netip.Addr]int
	perNet   map[netip.Prefix]int
	conns    map[net.Conn]struct{}
	lns      []net.Listener
	wg       sync.WaitGroup
	shutdown bool
}

// New builds a server from the SMTP part of a finished configuration
// (config.Config.SMTP): its local and relay domains, networks and own
// addresses are the canonical ones of config.Site.
func New(cfg *config.SMTP, deps Deps) (*Server, error) {
	if deps.Users == nil || deps.Creds == nil || deps.Spool == nil {
		return nil, errors.New("smtpd: Users, Creds and Spool are required")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Events == nil {
		deps.Events = event.Discard{}
	}
	if deps.Metrics == nil {
		deps.Metrics = NewMetrics(nil)
	}
	if deps.Counter == nil {
		deps.Counter = limits.NewMemory()
	}
	if cfg == nil || cfg.Site == nil {
		return nil, errors.New("smtpd: no site (config.Finish builds it)")
	}
	s := &Server{
		deps: deps, log: deps.Log, ml: maillog.New(deps.Log),
		perIP: map[netip.Addr]int{}, perNet: map[netip.Prefix]int{}, conns: map[net.Conn]struct{}{},
	}
	s.cid.Store(rand.Uint64() >> 24) // 10 hex digits to start with
	if deps.TLS != nil && len(deps.TLS.Certificates) > 0 {
		if leaf := deps.TLS.Certificates[0].Leaf; leaf != nil {
			s.leaf = leaf
		} else if len(deps.TLS.Certificates[0].Certificate) > 0 {
			if leaf, err := x509.ParseCertificate(deps.TLS.Certificates[0].Certificate[0]); err == nil {
				s.leaf = leaf
			}
		}
	}
	s.set.Store(newSettings(cfg, nil))
	return s, nil
}

// settings are what a session reads from the configuration. Reload
// replaces them; a session keeps the settings it started with, so that a
// reload never changes the rules in the middle of a dialogue.
type settings struct {
	cfg   *config.SMTP
	mechs []string // configured mechanisms, upper case, in order
	// listeners are the listener settings of the last Reload, by name;
	// a listener not named here keeps those it was served with.
	listeners map[string]*listener
}

func newSettings(cfg *config.SMTP, lcs []config.ListenerConfig) *settings {
	st := &settings{cfg: cfg, listeners: map[string]*listener{}}
	for _, m := range cfg.Auth.Mechanisms {
		st.mechs = append(st.mechs, strings.ToUpper(m))
	}
	for _, lc := range lcs {
		st.listeners[lc.Name] = &listener{cfg: lc, allow: lc.AllowNets, deny: lc.DenyNets}
	}
	return st
}

// Reload puts a new configuration (SMTP part, listener settings) in force
// for the sessions that start from now on; sessions in progress finish on
// the settings they started with. Listener settings (mode, allow/deny,
// trusted_local) apply to the listeners already served under the same
// name; binding new addresses is the caller's. The certificate is the
// deps.TLS owner's (certs.Provider replaces it in place).
func (s *Server) Reload(cfg *config.SMTP, listeners []config.ListenerConfig) error {
	if cfg == nil || cfg.Site == nil {
		return errors.New("smtpd: no site (config.Finish builds it)")
	}
	for _, lc := range listeners {
		if len(lc.AllowNets) != len(lc.Allow) || len(lc.DenyNets) != len(lc.Deny) {
			return fmt.Errorf("smtpd: listener %s: allow/deny not parsed (config.Finish parses them)", lc.Name)
		}
		if lc.Mode == config.ModeSubmissions && s.deps.TLS == nil {
			return fmt.Errorf("smtpd: listener %s: submissions needs a TLS certificate", lc.Name)
		}
	}
	s.set.Store(newSettings(cfg, listeners))
	return nil
}

// settings returns the settings in force.
func (s *Server) settings() *settings { return s.set.Load() }

// listener is one bound listener and its settings.
type listener struct {
	cfg   config.ListenerConfig
	allow []netip.Prefix
	deny  []netip.Prefix
}

// Serve accepts on ln for the listener named name until ctx ends or
// Shutdown is called.
func (s *Server) Serve(ctx context.Context, ln net.Listener, lc config.ListenerConfig) error {
	if len(lc.AllowNets) != len(lc.Allow) || len(lc.DenyNets) != len(lc.Deny) {
		return fmt.Errorf("smtpd: listener %s: allow/deny not parsed (config.Finish parses them)", lc.Name)
	}
	l := &listener{cfg: lc, allow: lc.AllowNets, deny: lc.DenyNets}
	if lc.Mode == config.ModeSubmissions && s.deps.TLS == nil {
		return fmt.Errorf("smtpd: listener %s: submissions needs a TLS certificate", lc.Name)
	}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		ln.Close()
		return errors.New("smtpd: server is shut down")
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	var tempDelay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			down := s.shutdown
			s.mu.Unlock()
			if down || ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off and go on
			// serving, as net/http does.
			if tempDelay == 0 {
				tempDelay = 5 * time.Millisecond
			} else if tempDelay *= 2; tempDelay > time.Second {
				tempDelay = time.Second
			}
			s.log.Error("accept failed", "listener", lc.Name, "err", err)
			time.Sleep(tempDelay)
			continue
		}
		tempDelay = 0
		cur := l
		if rl := s.settings().listeners[lc.Name]; rl != nil {
			cur = rl // reloaded settings of this listener
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(ctx, c, cur)
		}()
	}
}

// Shutdown stops accepting, closes every connection, and waits for the
// session goroutines.
func (s *Server) Shutdown() {
	s.mu.Lock()
	s.shutdown = true
	for _, ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		// RFC 5321 §3.8: tell the client to come back later.
		c.SetWriteDeadline(time.Now().Add(time.Second))
		fmt.Fprintf(c, "421 4.3.2 %s Service shutting down, try again later\r\n", s.settings().cfg.Hostname)
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// admit applies the connection limits; it returns the refusal to send
// and close with, or a zero Reply to go on.
func (s *Server) admit(c net.Conn, ip netip.Addr) Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg := s.settings().cfg
	lim := cfg.Limits
	if s.total >= lim.MaxConnections {
		return limitReached(421, "4.3.2", "limits.max_connections", lim.MaxConnections,
			cfg.Hostname+" Service not available, too many connections, try again later").closing()
	}
	if s.perIP[ip] >= lim.MaxConnectionsIP {
		return limitReached(421, "4.7.0", "limits.max_connections_per_ip", lim.MaxConnectionsIP,
			cfg.Hostname+" Error: too many connections from "+ip.String()).closing()
	}
	if n := clientNet(ip); s.perNet[n] >= lim.MaxConnectionsNet {
		return limitReached(421, "4.7.0", "limits.max_connections_per_net", lim.MaxConnectionsNet,
			cfg.Hostname+" Error: too many connections from "+n.String()).closing()
	}
	s.total++
	s.perIP[ip]++
	s.perNet[clientNet(ip)]++
	s.conns[c] = struct{}{}
	return Reply{}
}

// clientNet is the network a client is counted in: IPv4 /24, IPv6 /64 (one
// end site usually holds a whole /64).
func clientNet(ip netip.Addr) netip.Prefix {
	bits := 24
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

func (s *Server) release(c net.Conn, ip netip.Addr) {
	s.mu.Lock()
	s.total--
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
	if n := clientNet(ip); s.perNet[n] > 1 {
		s.perNet[n]--
	} else {
		delete(s.perNet, n)
	}
	delete(s.conns, c)
	s.mu.Unlock()
}

// handle runs one connection.
func (s *Server) handle(ctx context.Context, c net.Conn, l *listener) {
	defer c.Close()
	if l.cfg.ProxyProtocol {
		pc, err := proxied(c, l.cfg)
		if err != nil {
			// No reply: the peer does not speak the framing agreed on.
			s.log.Warn("PROXY protocol: connection closed", "listener", l.cfg.Name, "peer", c.RemoteAddr().String(), "err", err)
			s.deps.Metrics.Rejections.WithLabelValues("proxy_protocol").Inc()
			return
		}
		c = pc
	}
	ip := clientIP(c)
	s.deps.Metrics.Connections.WithLabelValues(l.cfg.Name).Inc()
	sess := newSession(s, c, l, ip, s.newCID())
	refuse := func(r Reply) {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		sess.send(ctx, r)
		sess.bw.Flush()
	}
	if r := s.admit(c, ip); r.Close {
		refuse(r)
		return
	}
	defer s.release(c, ip)
	s.deps.Metrics.Active.Inc()
	defer s.deps.Metrics.Active.Dec()

	// hosts.allow / hosts.deny, before the banner.
	if (len(l.allow) > 0 && !containsAddr(l.allow, ip)) || containsAddr(l.deny, ip) {
		refuse(Reply{Code: 554, Enhanced: "5.7.1", Text: sess.cfg.Hostname + " Error: access denied for " + ip.String(),
			Rule: "client_access", Detail: "connection refused by listener allow/deny list", Close: true})
		return
	}
	if s.deps.Guard != nil {
		if ok, reason := s.deps.Guard.Admit(ip); !ok {
			refuse(Reply{Code: 421, Enhanced: "4.7.0", Text: sess.cfg.Hostname + " Error: " + oneLine(reason),
				Rule: "banned", Detail: reason, Close: true})
			return
		}
	}
	sess.run(ctx)
}

// proxied reads the PROXY protocol header (v1 or v2, HAProxy's
// proxy-protocol.txt) that a load balancer in front of the listener sends,
// with github.com/pires/go-proxyproto, and returns the connection whose
// RemoteAddr and LocalAddr are the client's and the address it connected
// to, so that every limit, ban, policy check and log line is about the
// real client. Only proxy_from may send it; a LOCAL header (a health
// check) leaves the proxy's own address.
func proxied(c net.Conn, lc config.ListenerConfig) (net.Conn, error) {
	peer := clientIP(c)
	if !containsAddr(lc.ProxyFromNets, peer) {
		return nil, fmt.Errorf("%s is not in proxy_from", peer)
	}
	pc := proxyproto.NewConn(c, proxyproto.WithPolicy(proxyproto.REQUIRE), proxyproto.SetReadHeaderTimeout(10*time.Second))
	if pc.ProxyHeader() == nil {
		return nil, errors.New("no valid PROXY header")
	}
	c.SetReadDeadline(time.Time{}) // the header read left one
	return pc, nil
}

// newCID returns a connection id: a counter from a random start, in hex,
// unique within the process and unlikely to repeat across restarts (mox's
// cid).
func (s *Server) newCID() string {
	return strconv.FormatUint(s.cid.Add(1), 16)
}

func clientIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
