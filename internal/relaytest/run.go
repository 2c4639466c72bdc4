// Package relaytest runs a battery of open-relay attempts against any SMTP
// server: the address forms of the classic relay scanners and the MAPS
// tester, plus forms older batteries never tried, again after STARTTLS and
// again after a failed AUTH. A test counts as a relay only when RCPT TO gets
// a 2xx reply (and, with Options.Data, the message gets 250 after DATA).
package relaytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StartTLS modes.
const (
	StartTLSNever = "never"
	StartTLSTry   = "try"
	StartTLSOnly  = "only"
)

// Defaults for the outside addresses: under .example, reserved by RFC 2606,
// so that a relay that does accept can never deliver anything to anyone.
const (
	DefaultFrom = "relay-sender@relaytest.example"
	DefaultTo   = "relay-target@relaytest.example"
	DefaultHelo = "relaytest.example"
)

// Options configure a run.
type Options struct {
	Addr        string     // host:port to connect to
	Host        string     // the host as given (for TLS SNI)
	From, To    string     // outside sender and recipient
	Helo        string     // EHLO name
	ServerName  string     // "" = from the banner
	IP          netip.Addr // zero = the connection's remote address
	Source      netip.Addr // local address to connect from; zero = any
	StartTLS    string     // never, try or only
	ImplicitTLS bool       // TLS from the first byte (RFC 8314, port 465)
	Data        bool       // also send a test message
	NewConn     bool       // one connection per test instead of RSET
	Timeout     time.Duration
	// ErrorsPerConn reconnects before a test once the connection has seen
	// this many 4xx/5xx replies, to stay under servers' error limits
	// (Postfix smtpd_soft_error_limit=10 starts sleeping one second per
	// error after that). 0 = never.
	ErrorsPerConn int
	// AuthUser/AuthPass, when set, authenticate every session: this tests
	// what an authenticated user may relay, not what outsiders may.
	AuthUser, AuthPass string
	// Parallel is how many connections may run tests at once (0 or 1:
	// one at a time).
	Parallel int
	// Transcript, if not nil, receives every line sent and received.
	Transcript io.Writer
	// Dial, when set, opens the TCP connection to Addr instead of a
	// net.Dialer (e.g. from another network namespace); Source is then
	// not used.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Phase names.
const (
	PhasePlain    = "plain"    // no TLS, no AUTH
	PhaseStartTLS = "starttls" // after STARTTLS
	PhaseAuthFail = "authfail" // after a failed AUTH (over TLS when offered)
	PhaseAuth     = "auth"     // after a successful AUTH (--auth)
)

// Verdicts of one test.
const (
	Accepted     = "accepted"
	Rejected     = "rejected"
	AuthRequired = "auth-required"
	Temporary    = "temporary"
	Failed       = "error"
)

// Run runs the battery. The returned error is non-nil only when the server
// could not be tested at all; the report is filled as far as it got.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	if o.From == "" {
		o.From = DefaultFrom
	}
	if o.To == "" {
		o.To = DefaultTo
	}
	if o.Helo == "" {
		o.Helo = DefaultHelo
	}
	if o.StartTLS == "" {
		o.StartTLS = StartTLSTry
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Parallel == 0 {
		o.Parallel = 1
	}
	rep := &Report{Addr: o.Addr, From: o.From, To: o.To, AuthUser: o.AuthUser, Counts: map[string]int{}}
	if err := verbatim(map[string]string{"from": o.From, "to": o.To, "helo": o.Helo, "server name": o.ServerName, "auth user": o.AuthUser}); err != nil {
		rep.finish(err)
		return rep, err
	}
	r := &runner{o: &o, rep: rep, phInfo: map[string]PhaseInfo{}}
	err := r.run(ctx)
	rep.Duration = time.Since(start)
	rep.finish(err)
	if rep.Untestable != nil {
		return rep, rep.Untestable
	}
	return rep, nil
}

// verbatim checks the options sent verbatim in commands: a line break in
// one would smuggle in another command.
func verbatim(opts map[string]string) error {
	for name, v := range opts {
		if strings.ContainsAny(v, "\r\n\x00") {
			return untestable(ReasonOption, fmt.Errorf("%s %q contains a line break or NUL", name, v))
		}
	}
	return nil
}

type runner struct {
	o   *Options
	rep *Report

	mu     sync.Mutex // guards phaseInfo, rep.Notes and the transcript
	phInfo map[string]PhaseInfo
	// tlsBroken: STARTTLS is offered but fails; with StartTLSTry the
	// phases run without it (set before the workers start).
	tlsBroken bool
}

// worker runs forms of one phase on its own connection.
type worker struct {
	r     *runner
	ph    string
	c     *client
	trace func(dir, line string)
}

func untestable(reason string, err error) *UntestableError {
	return &UntestableError{Reason: reason, Err: err}
}

func (r *runner) note(n string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.rep.Notes, n) {
		r.rep.Notes = append(r.rep.Notes, n)
	}
}

// tracer returns a transcript writer to w (nil: none).
func (r *runner) tracer(w io.Writer) func(dir, line string) {
	if w == nil {
		return nil
	}
	return func(dir, line string) {
		r.mu.Lock()
		defer r.mu.Unlock()
		fmt.Fprintf(w, "    %s %s\n", dir, line)
	}
}

func (r *runner) run(ctx context.Context) error {
	// The first connection learns the server's name, address and
	// extensions, which the forms and the phases depend on.
	c, banner, err := r.connect(ctx, r.tracer(r.o.Transcript))
	if err != nil {
		return err
	}
	rep := r.rep
	rep.Banner = banner.String()
	remote, _ := netip.ParseAddrPort(c.nc.RemoteAddr().String())
	local, _ := netip.ParseAddrPort(c.nc.LocalAddr().String())
	rep.Source = local.Addr().Unmap().String()
	ip := r.o.IP
	if !ip.IsValid() {
		ip = remote.Addr().Unmap()
	}
	rep.IP = ip.String()
	name := r.o.ServerName
	if name == "" {
		name = nameFromBanner(banner.Text)
	}
	if name == "" {
		name = nameFromBanner(c.ext["_GREETING"])
	}
	if name == "" {
		name = ipLiteral(ip)
		rep.Notes = append(rep.Notes, "the banner names no host; using the address literal as the server name (give --server-name)")
	}
	rep.ServerName = name
	for k, v := range c.ext {
		if k != "_GREETING" {
			rep.Extensions = append(rep.Extensions, strings.TrimSpace(k+" "+v))
		}
	}
	slices.Sort(rep.Extensions)
	rep.STARTTLS = c.has("STARTTLS") || r.o.ImplicitTLS
	rep.SMTPUTF8 = c.has("SMTPUTF8")
	if local.Addr().IsLoopback() && remote.Addr().IsLoopback() {
		rep.Notes = append(rep.Notes, "testing over loopback: servers often trust loopback clients (Postfix mynetworks); run from an outside host for an outsider's view")
	}
	phases, err := r.phases(ctx, c)
	c.quit()
	if err != nil {
		return err
	}
	forms := Battery(Target{From: r.o.From, To: r.o.To, ServerName: name, IP: ip})
	return r.runJobs(ctx, phases, forms)
}

// runJobs runs every phase's forms. With Parallel > 1 the forms are cut
// into chunks of about as many tests as a connection may fail
// (ErrorsPerConn), and up to Parallel chunks run at once, each on its own
// connection; results and transcript keep the battery's order.
func (r *runner) runJobs(ctx context.Context, phases []string, forms []Form) error {
	type job struct {
		ph    string
		start int // index of the first result
		forms []Form
		out   bytes.Buffer
	}
	chunk := len(forms)
	if r.o.Parallel > 1 && r.o.ErrorsPerConn > 2 {
		chunk = r.o.ErrorsPerConn - 1
	}
	var jobs []*job
	for i, ph := range phases {
		for j := 0; j < len(forms); j += chunk {
			jobs = append(jobs, &job{ph: ph, start: i*len(forms) + j, forms: forms[j:min(j+chunk, len(forms))]})
		}
	}
	// Sessions after AUTH are the slow ones (servers delay failed AUTH):
	// start them first so that the fast phases fill the gaps.
	slices.SortStableFunc(jobs, func(a, b *job) int {
		if r.o.Parallel <= 1 {
			return 0 // one at a time: keep the battery's order
		}
		slow := func(j *job) bool { return j.ph == PhaseAuthFail || j.ph == PhaseAuth }
		switch {
		case slow(a) && !slow(b):
			return -1
		case slow(b) && !slow(a):
			return 1
		}
		return 0
	})
	results := make([]Result, len(phases)*len(forms))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		once   sync.Once
		runErr error
		wg     sync.WaitGroup
	)
	queue := make(chan *job)
	workers := max(1, min(r.o.Parallel, len(jobs)))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for jb := range queue {
				tw := r.o.Transcript
				if workers > 1 && tw != nil {
					tw = &jb.out
				}
				w := &worker{r: r, ph: jb.ph, trace: r.tracer(tw)}
				err := w.setup(ctx)
				for i, f := range jb.forms {
					if err != nil {
						results[jb.start+i] = w.failed(f, err)
						continue
					}
					results[jb.start+i] = w.test(ctx, f)
				}
				if w.c != nil {
					w.c.quit()
				}
				var ue *UntestableError
				if ctx.Err() != nil || errors.As(err, &ue) && (ue.Reason == ReasonAuth || ue.Reason == ReasonProtocol) {
					once.Do(func() {
						runErr = err
						if runErr == nil {
							runErr = ctx.Err()
						}
						cancel()
					})
				}
			}
		}()
	}
	for _, jb := range jobs {
		select {
		case queue <- jb:
		case <-ctx.Done():
		}
	}
	close(queue)
	wg.Wait()
	if workers > 1 && r.o.Transcript != nil {
		slices.SortFunc(jobs, func(a, b *job) int { return a.start - b.start })
		for _, jb := range jobs {
			r.o.Transcript.Write(jb.out.Bytes())
		}
	}
	for _, ph := range phases {
		if info, ok := r.phInfo[ph]; ok {
			r.rep.Phases = append(r.rep.Phases, info)
		}
	}
	for _, res := range results {
		if res.ID != "" {
			r.rep.Results = append(r.rep.Results, res)
		}
	}
	return runErr
}

// phases decides which phases run, from the options and what the first
// connection offered.
func (r *runner) phases(ctx context.Context, c *client) ([]string, error) {
	tlsOK := c.has("STARTTLS")
	if r.o.ImplicitTLS {
		if r.o.AuthUser != "" {
			return []string{PhaseAuth}, nil
		}
		return []string{PhasePlain, PhaseAuthFail}, nil
	}
	if r.o.StartTLS == StartTLSOnly && !tlsOK {
		return nil, untestable(ReasonNoTLS, fmt.Errorf("--starttls=only but %s does not offer STARTTLS", r.o.Addr))
	}
	if r.o.AuthUser != "" {
		return []string{PhaseAuth}, nil
	}
	switch {
	case r.o.StartTLS == StartTLSNever:
		return []string{PhasePlain, PhaseAuthFail}, nil
	case r.o.StartTLS == StartTLSOnly:
		return []string{PhaseStartTLS, PhaseAuthFail}, nil
	case tlsOK:
		// A server may offer STARTTLS and fail every handshake (no
		// certificate loaded, RFC 3207 4.1's 454): the battery still
		// runs without TLS rather than not at all, which would hide
		// an open relay behind the broken TLS.
		if _, err := c.startTLS(ctx, r.o); err != nil {
			r.tlsBroken = true
			r.rep.Notes = append(r.rep.Notes, "STARTTLS is offered but fails ("+err.Error()+"): the starttls phase is skipped and the authfail phase runs without TLS")
			return []string{PhasePlain, PhaseAuthFail}, nil
		}
		return []string{PhasePlain, PhaseStartTLS, PhaseAuthFail}, nil
	default:
		r.rep.Notes = append(r.rep.Notes, "the server does not offer STARTTLS: the starttls phase is skipped")
		return []string{PhasePlain, PhaseAuthFail}, nil
	}
}

// useTLS says whether sessions of the worker's phase go through STARTTLS.
func (w *worker) useTLS() bool {
	if w.r.o.ImplicitTLS || w.r.o.StartTLS == StartTLSNever {
		return false
	}
	switch w.ph {
	case PhaseStartTLS:
		return true
	case PhaseAuthFail, PhaseAuth:
		return w.r.rep.STARTTLS && !w.r.tlsBroken
	}
	return false
}

// connect dials, reads the banner and says EHLO.
func (r *runner) connect(ctx context.Context, trace func(dir, line string)) (*client, Reply, error) {
	c, err := dial(ctx, r.o, trace)
	if err != nil {
		if ctx.Err() != nil {
			return nil, Reply{}, ctx.Err()
		}
		// RFC 5321 3.1: a server may also refuse with a 554 banner,
		// which greet reports as refused too.
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, Reply{}, untestable(ReasonRefused, err)
		}
		return nil, Reply{}, untestable(ReasonConnect, err)
	}
	c.tr("=", "connected to "+c.nc.RemoteAddr().String()+" from "+c.nc.LocalAddr().String())
	banner, err := c.greet()
	if err != nil {
		c.close()
		if ctx.Err() != nil {
			return nil, banner, ctx.Err()
		}
		return nil, banner, err
	}
	hr, err := c.hello(r.o.Helo)
	if err != nil {
		c.quit()
		return nil, banner, untestable(ReasonProtocol, err)
	}
	c.ext["_GREETING"] = strings.SplitN(hr.Text, "\n", 2)[0]
	return c, banner, nil
}

// setup opens a connection for the worker's phase and brings it to the
// phase's state: STARTTLS, failed AUTH or successful AUTH.
func (w *worker) setup(ctx context.Context) error {
	r := w.r
	info := PhaseInfo{Name: w.ph, TLS: r.o.ImplicitTLS}
	c, _, err := r.connect(ctx, w.trace)
	if err != nil {
		return err
	}
	steps := []string{"EHLO"}
	if w.useTLS() {
		if _, err := c.startTLS(ctx, r.o); err != nil {
			c.quit()
			return untestable(ReasonProtocol, fmt.Errorf("phase %s: %w", w.ph, err))
		}
		info.TLS = true
		steps = append(steps, "STARTTLS", "EHLO")
	}
	switch w.ph {
	case PhaseAuthFail:
		ar, err := c.bogusAuth()
		if err != nil {
			c.close()
			return untestable(ReasonProtocol, fmt.Errorf("phase %s: AUTH: %w", w.ph, err))
		}
		steps = append(steps, "AUTH PLAIN (random credential) → "+ar.String())
		if ar.Code/100 == 2 {
			r.note("the server ACCEPTED AUTH with a random user and password: " + ar.String())
		}
	case PhaseAuth:
		ar, err := c.authenticate(r.o.AuthUser, r.o.AuthPass)
		if err != nil {
			c.close()
			return untestable(ReasonAuth, err)
		}
		steps = append(steps, "AUTH as "+r.o.AuthUser+" → "+ar.String())
		if ar.Code != 235 {
			c.quit()
			return untestable(ReasonAuth, fmt.Errorf("AUTH as %s: %s", r.o.AuthUser, ar))
		}
	}
	c.errors = 0
	w.c = c
	info.Setup = strings.Join(steps, "; ")
	r.mu.Lock()
	if _, ok := r.phInfo[w.ph]; !ok {
		r.phInfo[w.ph] = info
	}
	r.mu.Unlock()
	return nil
}

func (w *worker) result(f Form) Result {
	return Result{ID: w.ph + "/" + f.Name, Phase: w.ph, Name: f.Name, Group: f.Group, MailFrom: f.From, RcptTo: f.To}
}

// failed is the result of a test that could not run.
func (w *worker) failed(f Form, err error) Result {
	res := w.result(f)
	res.Verdict, res.Stage, res.Error = Failed, "connect", err.Error()
	return res
}

// test runs one form on the worker's connection (opening a new one when
// needed), retrying once on a fresh connection if the server hung up.
func (w *worker) test(ctx context.Context, f Form) Result {
	res := w.result(f)
	o := w.r.o
	for attempt := 0; attempt < 2; attempt++ {
		if w.c != nil && (w.c.closed || o.ErrorsPerConn > 0 && w.c.errors+2 > o.ErrorsPerConn) {
			w.c.quit()
			w.c = nil
		}
		if w.c == nil {
			if err := w.setup(ctx); err != nil {
				return w.failed(f, err)
			}
		}
		if w.trace != nil {
			w.trace("#", res.ID)
		}
		res.Exchanges, res.Error = nil, ""
		lost := w.attempt(f, &res)
		if o.NewConn {
			w.c.quit()
			w.c = nil
		} else if !w.c.closed {
			if rr, err := w.c.cmd("RSET", ""); err != nil || rr.Code/100 != 2 {
				w.c.quit()
			}
		}
		if !lost {
			break
		}
	}
	return res
}

// attempt sends MAIL, RCPT and (with Data) DATA, and classifies the
// outcome. It reports whether the connection was lost before a verdict.
func (w *worker) attempt(f Form, res *Result) (lost bool) {
	r, c := w.r, w.c
	mail := "MAIL FROM:<" + f.From + ">"
	if f.UTF8 && c.has("SMTPUTF8") {
		mail += " SMTPUTF8" // RFC 6531 3.4
	}
	step := func(stage, line string) (Reply, bool) {
		rp, err := c.cmd(line, "")
		if err != nil {
			res.Verdict, res.Stage, res.Error = Failed, stage, err.Error()
			return rp, false
		}
		res.Exchanges = append(res.Exchanges, Exchange{Command: line, Reply: rp})
		if rp.Code == 421 {
			res.Verdict, res.Stage = Temporary, stage
			return rp, false
		}
		return rp, true
	}
	rp, ok := step("mail", mail)
	if !ok {
		return true
	}
	if rp.Code/100 != 2 {
		res.Verdict, res.Stage = classify(rp.Code), "mail"
		return false
	}
	rp, ok = step("rcpt", "RCPT TO:<"+f.To+">")
	if !ok {
		return true
	}
	res.Verdict, res.Stage = classify(rp.Code), "rcpt"
	if rp.Code/100 != 2 || !r.o.Data {
		return false
	}
	cr, dr, sent, err := c.data(testMessage(r.o, f, res.ID, r.rep.ServerName))
	if cr.Code != 0 {
		res.Exchanges = append(res.Exchanges, Exchange{Command: "DATA", Reply: cr})
	}
	res.Stage = "data"
	if err != nil {
		res.Verdict, res.Error = Failed, err.Error()
		return true
	}
	if !sent {
		// No 354: no message went out, so nothing was relayed whatever
		// the code (a 2xx here is a protocol error, not an acceptance).
		res.Verdict = classify(cr.Code)
		if cr.Code == 421 {
			res.Verdict = Temporary
		}
		if res.Verdict == Accepted {
			res.Verdict, res.Error = Failed, "DATA answered "+cr.String()+" instead of 354: no message sent"
		}
		return false
	}
	// RFC 5321 4.1.1.4: only 250 at the end of the data accepts the message.
	res.Exchanges = append(res.Exchanges, Exchange{Command: ".", Reply: dr})
	if dr.Code == 250 {
		res.Verdict = Accepted
	} else {
		res.Verdict = classify(dr.Code)
		if res.Verdict == Accepted { // 2xx other than 250 after the data
			res.Verdict = Failed
			res.Error = "unexpected reply at end of data: " + dr.String()
		}
	}
	return false
}

// testMessage is the harmless message sent with --data.
func testMessage(o *Options, f Form, id, server string) string {
	now := time.Now().UTC().Format(time.RFC1123Z)
	return "From: relayguard relay test <" + o.From + ">\r\n" +
		"To: <" + o.To + ">\r\n" +
		"Subject: relayguard relay test " + id + "\r\n" +
		"Date: " + now + "\r\n" +
		"Message-ID: <" + randomLabel(20) + "@relaytest.example>\r\n" +
		"\r\n" +
		"This is a relay test sent by relayguard relaytest to " + server + ".\r\n" +
		"Test " + id + ": MAIL FROM:<" + f.From + "> RCPT TO:<" + f.To + ">.\r\n" +
		"If it reached you, that server relays mail for third parties.\r\n"
}

// nameFromBanner takes the first word of a banner or EHLO reply text when it
// looks like a host name (RFC 5321 4.3.1: the banner starts with the
// server's domain).
func nameFromBanner(text string) string {
	first := strings.SplitN(text, "\n", 2)[0]
	w, _, _ := strings.Cut(strings.TrimSpace(first), " ")
	if w == "" || strings.ContainsAny(w, "<>@\"") {
		return ""
	}
	if strings.HasPrefix(w, "[") && strings.HasSuffix(w, "]") {
		return w
	}
	switch strings.ToUpper(w) {
	case "ESMTP", "SMTP", "READY", "SERVICE", "WELCOME", "HELLO", "MAIL", "SERVER":
		// Banners that start with a greeting instead of a name.
		return ""
	}
	for _, r := range w {
		if !(r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return ""
		}
	}
	return w
}
