package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/limits"
	"github.com/relayguard/relayguard/internal/maillog"
)

// Guard is what the console needs of the guard (*guard.Guard): its bans,
// and its answer about an AUTH attempt, which a console login is.
type Guard interface {
	Admit(ip netip.Addr) (bool, string)
	AuthAttempt(ctx context.Context, ip netip.Addr) (*limits.Reservation, error)
	Banned(ip netip.Addr) (ban.Ban, bool)
	Bans() []ban.Ban
	Ban(ctx context.Context, p netip.Prefix, d time.Duration, reason string) (ban.Ban, error)
	Unban(ctx context.Context, p netip.Prefix) (bool, error)
	// Version changes whenever the list of bans does.
	Version() uint64
}

// principal is who makes a request.
type principal struct {
	admin   string
	role    string
	token   int64 // the API token used; 0: a session
	sess    *session
	client  netip.Addr
	display string // for the action log: "ops" or "ops, token 3"
}

// The security headers of every response. The policy names no origin but
// the console's own: scripts, styles and connections from 'self' only, no
// inline script or style, no plugin, no framing of the console.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

func (c *Console) secure(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	if c.o.HTTPS {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
}

// clientIP is the request's peer address (never a header a client could
// forge).
func clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		a, _ := netip.ParseAddr(host)
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

// apiError is the JSON body of an error.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	enc.Encode(v)
}

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, args...)})
}

// readJSON decodes a request body of at most 64 KiB into v.
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

// admitted refuses a banned client before anything else: the console is
// closed to it as the SMTP listeners are.
func (c *Console) admitted(w http.ResponseWriter, r *http.Request) (netip.Addr, bool) {
	ip := clientIP(r)
	if ok, reason := c.o.Guard.Admit(ip); !ok {
		fail(w, http.StatusForbidden, "%s", reason)
		return ip, false
	}
	return ip, true
}

// auth wraps an API handler: the client is admitted, authenticated by its
// session cookie or a bearer token, and, for an action (act), must hold
// the admin role and, with a session, send the session's CSRF token in
// X-CSRF-Token from a page of the console's own origin.
func (c *Console) auth(act bool, h func(http.ResponseWriter, *http.Request, *principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c.secure(w)
		ip, ok := c.admitted(w, r)
		if !ok {
			return
		}
		p, code, msg := c.authenticate(r, ip)
		if p == nil {
			fail(w, code, "%s", msg)
			return
		}
		if act {
			if p.sess != nil {
				if !sameToken(r.Header.Get("X-CSRF-Token"), p.sess.csrf) {
					c.ml.ConsoleAction(r.Context(), maillog.ConsoleAct{Admin: p.display, Client: ip, Action: actionName(r), Err: "refused: missing or wrong CSRF token"})
					fail(w, http.StatusForbidden, "missing or wrong CSRF token")
					return
				}
				if !c.sameOrigin(r) {
					c.ml.ConsoleAction(r.Context(), maillog.ConsoleAct{Admin: p.display, Client: ip, Action: actionName(r), Err: "refused: cross-origin request"})
					fail(w, http.StatusForbidden, "cross-origin request refused")
					return
				}
			}
			if p.role != RoleAdmin {
				c.ml.ConsoleAction(r.Context(), maillog.ConsoleAct{Admin: p.display, Client: ip, Action: actionName(r), Err: "refused: read-only account"})
				fail(w, http.StatusForbidden, "%s is a read-only account", p.admin)
				return
			}
		}
		h(w, r, p)
	}
}

// actionName names an action by its API path for the log.
func actionName(r *http.Request) string { return r.Method + " " + r.URL.Path }

// sameOrigin reports whether the request comes from a page of the
// console's own origin: the browser's Origin header, when sent, names
// this host (a second line behind SameSite and the CSRF token).
func (c *Console) sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	scheme := "http://"
	if c.o.HTTPS {
		scheme = "https://"
	}
	return o == scheme+r.Host
}

// authenticate finds the request's principal: a bearer token or the
// session cookie. A wrong token is a failed login, counted by the guard.
func (c *Console) authenticate(r *http.Request, ip netip.Addr) (*principal, int, string) {
	ctx := r.Context()
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return nil, http.StatusUnauthorized, "Authorization: want \"Bearer TOKEN\""
		}
		res, err := c.o.Guard.AuthAttempt(ctx, ip)
		if err != nil {
			return nil, http.StatusTooManyRequests, err.Error()
		}
		ad, id, ok, err := c.o.Admins.CheckToken(ctx, strings.TrimSpace(tok))
		if err != nil {
			res.End(ctx, false)
			c.log.Error("console: token check", "err", err)
			return nil, http.StatusServiceUnavailable, "admin store unavailable"
		}
		if !ok {
			res.End(ctx, true)
			c.failedLogin(ctx, ip, "token", "", "invalid token")
			return nil, http.StatusUnauthorized, "invalid or expired token"
		}
		res.End(ctx, false)
		return &principal{admin: ad.Name, role: ad.Role, token: id, client: ip, display: fmt.Sprintf("%s, token %d", ad.Name, id)}, 0, ""
	}
	ck, err := r.Cookie(c.cookieName())
	if err != nil || ck.Value == "" {
		return nil, http.StatusUnauthorized, "not logged in"
	}
	s, ok := c.sess.get(ck.Value)
	if !ok {
		return nil, http.StatusUnauthorized, "session ended; log in again"
	}
	return &principal{admin: s.admin, role: s.role, sess: s, client: ip, display: s.admin}, 0, ""
}

// failedLogin logs a failed console login the way a failed SMTP AUTH is
// logged, and publishes it to the guard. The event carries no username:
// admin names are not mail accounts (the accounts' detector must not count
// them, nor take "admin" for its decoy).
func (c *Console) failedLogin(ctx context.Context, ip netip.Addr, mech, name, reason string) {
	c.ml.AuthFailed(ctx, maillog.Conn{Client: ip, Listener: maillog.ConsoleListener}, mech, name, reason)
	c.o.Events.Publish(ctx, event.Event{Kind: event.AuthFailure, Source: "console", IP: ip, Mechanism: mech,
		Detail: reason, Service: maillog.ConsoleListener})
}

// failureDelay is how long a failed login waits before its answer
// ([limits] auth_failure_delay): a guesser gets few tries per connection.
func (c *Console) failureDelay() time.Duration { return c.o.Config.Limits.AuthFailureDelay.D() }

type loginRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

type sessionInfo struct {
	Admin   string `json:"admin"`
	Role    string `json:"role"`
	CSRF    string `json:"csrf,omitempty"`
	Command string `json:"command"`
	Host    string `json:"host"`
}

// login checks an admin's password: the attempt is counted by the guard
// first (a banned or over-limit client is refused before any password is
// checked), a failure is logged and published like a failed SMTP AUTH.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	c.secure(w)
	ctx := r.Context()
	ip, ok := c.admitted(w, r)
	if !ok {
		return
	}
	if !c.sameOrigin(r) {
		fail(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	var req loginRequest
	if err := readJSON(r, &req); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	res, err := c.o.Guard.AuthAttempt(ctx, ip)
	if err != nil {
		var ex *limits.Exceeded
		if errors.As(err, &ex) {
			fail(w, http.StatusTooManyRequests, "%v", err)
		} else {
			fail(w, http.StatusForbidden, "%v", err)
		}
		return
	}
	ad, ok, err := c.o.Admins.Verify(ctx, req.Name, req.Password)
	if err != nil {
		res.End(ctx, false)
		c.log.Error("console: login", "err", err)
		fail(w, http.StatusServiceUnavailable, "admin store unavailable, try again later")
		return
	}
	if !ok {
		res.End(ctx, true)
		c.failedLogin(ctx, ip, "password", req.Name, "invalid credentials")
		select {
		case <-time.After(c.failureDelay()):
		case <-ctx.Done():
		}
		fail(w, http.StatusUnauthorized, "invalid name or password")
		return
	}
	res.End(ctx, false)
	c.ml.AuthOK(ctx, maillog.Conn{Client: ip, Listener: maillog.ConsoleListener}, "password", ad.Name)
	c.o.Events.Publish(ctx, event.Event{Kind: event.AuthSuccess, Source: "console", IP: ip, Mechanism: "password", Service: maillog.ConsoleListener})
	s := c.sess.start(ad.Name, ad.Role, ip.String())
	c.setCookie(w, s.id, int(c.o.Config.Admin.SessionLifetime.D()/time.Second))
	writeJSON(w, http.StatusOK, c.info(s.admin, s.role, s.csrf))
}

func (c *Console) info(admin, role, csrf string) sessionInfo {
	return sessionInfo{Admin: admin, Role: role, CSRF: csrf, Command: c.o.Command, Host: c.o.Config.Site.Hostname}
}

// whoami tells the page who is logged in, and the CSRF token of the
// session.
func (c *Console) whoami(w http.ResponseWriter, _ *http.Request, p *principal) {
	csrf := ""
	if p.sess != nil {
		csrf = p.sess.csrf
	}
	writeJSON(w, http.StatusOK, c.info(p.admin, p.role, csrf))
}

// logout ends the session (an action: it needs the CSRF token, so that no
// other page can log the operator out).
func (c *Console) logout(w http.ResponseWriter, r *http.Request, p *principal) {
	if p.sess != nil {
		c.sess.end(p.sess.id)
	}
	c.setCookie(w, "", -1)
	c.ml.ConsoleAction(r.Context(), maillog.ConsoleAct{Admin: p.display, Client: p.client, Action: "logout"})
	writeJSON(w, http.StatusOK, struct{}{})
}

// act logs an action with who did it, and answers: the result, or the
// error (400 for bad input, 404 for what is not there, 500 otherwise).
func (c *Console) act(w http.ResponseWriter, r *http.Request, p *principal, action, target, reason string, result any, err error) {
	a := maillog.ConsoleAct{Admin: p.display, Client: p.client, Action: action, Target: target, Reason: reason}
	if err != nil {
		a.Err = err.Error()
	}
	c.ml.ConsoleAction(r.Context(), a)
	if err != nil {
		code := http.StatusInternalServerError
		var ue userError
		if errors.As(err, &ue) {
			code = ue.code
		}
		fail(w, code, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, result)
}

// userError is an error of the request (its code says which).
type userError struct {
	code int
	msg  string
}

func (e userError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return userError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return userError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}
