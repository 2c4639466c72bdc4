package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/relaytest"
)

var relaytestFlags struct {
	from, to, helo, serverName, ip, source, starttls, auth string
	data, iOwn, newConn, json, verbose, implicitTLS        bool
	timeout                                                time.Duration
	errorsPerConn, parallel                                int
}

func init() {
	f := &relaytestFlags
	cmd := &cobra.Command{
		Use:   "relaytest HOST[:PORT]",
		Short: "Test any SMTP server for open relay with a battery of classic and modern relay tricks",
		Long: `Run a battery of relay attempts against HOST (default port 25): the 16 address
forms of the classic relay scanners, the MAPS/OpenVAS forms, IPv6 literals,
uppercase and trailing-dot domains, UTF-8 and punycode domains, mixed quoting
and forged own-domain senders — without TLS, again after STARTTLS, and again
after a failed AUTH. A test counts as a relay only when RCPT TO gets 2xx
(with --data: when the message gets 250).

Without --data nothing is ever sent past RCPT: each test ends with RSET.

Exit status: 0 no relay accepted, 1 relay accepted, 2 could not test.`,
		Args: cobra.ExactArgs(1),
		RunE: runRelaytest,
	}
	fl := cmd.Flags()
	fl.StringVar(&f.from, "from", relaytest.DefaultFrom, "outside sender `address` used by the tests")
	fl.StringVar(&f.to, "to", relaytest.DefaultTo, "outside recipient `address` the tests try to relay to")
	fl.StringVar(&f.helo, "helo", relaytest.DefaultHelo, "EHLO `name`")
	fl.StringVar(&f.serverName, "server-name", "", "the server's own `name` used in the forms (default: from the banner)")
	fl.StringVar(&f.ip, "ip", "", "the server's `address` used in IP-literal forms (default: the connection's remote address)")
	fl.StringVar(&f.source, "source", "", "local `address` to connect from (e.g. 127.0.0.2 to test as a non-trusted loopback client)")
	fl.StringVar(&f.starttls, "starttls", relaytest.StartTLSTry, "never, try (repeat the battery after STARTTLS when offered) or only (test only over STARTTLS)")
	fl.BoolVar(&f.implicitTLS, "tls", false, "implicit TLS from the first byte (RFC 8314, port 465)")
	fl.StringVar(&f.auth, "auth", "", "authenticate as `USER:PASS` in every session, to test what an AUTHENTICATED user may relay (not an outsider's view)")
	fl.BoolVar(&f.data, "data", false, "also send DATA with a harmless test message; count a relay only if it gets 250 (loopback hosts only, unless --i-own-this-host)")
	fl.BoolVar(&f.iOwn, "i-own-this-host", false, "allow --data against a host that is not loopback")
	fl.BoolVar(&f.newConn, "new-connection", false, "one connection per test (default: RSET between tests)")
	fl.IntVar(&f.errorsPerConn, "errors-per-connection", 8, "reconnect once a connection has had this many 4xx/5xx replies, to stay under servers' error limits (0: never)")
	fl.IntVar(&f.parallel, "parallel", 8, "connections running tests at once (1: one at a time)")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "timeout for connecting and for each reply")
	fl.BoolVar(&f.json, "json", false, "print the report as JSON (every test: name, MAIL FROM, RCPT TO, each reply, verdict)")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "print the SMTP transcript (to stderr with --json)")
	rootCmd.AddCommand(cmd)
}

// splitHostPort accepts HOST, HOST:PORT, [V6]:PORT and a bare IPv6 address.
func splitHostPort(arg string) (host, port string, err error) {
	if a, err := netip.ParseAddr(arg); err == nil {
		return a.String(), "25", nil
	}
	if h, p, err := net.SplitHostPort(arg); err == nil {
		if h == "" || p == "" {
			return "", "", fmt.Errorf("host %q: empty host or port", arg)
		}
		return h, p, nil
	}
	if arg == "" || strings.ContainsAny(arg, "[]/ ") {
		return "", "", fmt.Errorf("host %q: want HOST or HOST:PORT", arg)
	}
	return arg, "25", nil
}

// allLoopback resolves host and reports whether every address is loopback.
func allLoopback(ctx context.Context, host string) (bool, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().IsLoopback(), nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return false, fmt.Errorf("resolving %s: %w", host, err)
	}
	for _, a := range addrs {
		if !a.Unmap().IsLoopback() {
			return false, nil
		}
	}
	return len(addrs) > 0, nil
}

func checkAddress(flag, v string) error {
	if strings.ContainsAny(v, "\r\n\x00<> ") {
		return fmt.Errorf("--%s %q: no spaces, angle brackets or line breaks", flag, v)
	}
	if !strings.Contains(v, "@") || strings.HasPrefix(v, "@") || strings.HasSuffix(v, "@") {
		return fmt.Errorf("--%s %q: want local@domain", flag, v)
	}
	return nil
}

func runRelaytest(cmd *cobra.Command, args []string) error {
	f := &relaytestFlags
	ctx := cmd.Context()
	usage := func(err error) error { return &exitError{code: 2, err: err} }
	host, port, err := splitHostPort(args[0])
	if err != nil {
		return usage(err)
	}
	o := relaytest.Options{
		Addr: net.JoinHostPort(host, port), Host: host,
		From: f.from, To: f.to, Helo: f.helo, ServerName: f.serverName,
		StartTLS: f.starttls, ImplicitTLS: f.implicitTLS, Data: f.data,
		NewConn: f.newConn, Timeout: f.timeout, ErrorsPerConn: f.errorsPerConn, Parallel: f.parallel,
	}
	if err := checkAddress("from", f.from); err != nil {
		return usage(err)
	}
	if err := checkAddress("to", f.to); err != nil {
		return usage(err)
	}
	if f.helo == "" || strings.ContainsAny(f.helo, "\r\n\x00 ") {
		return usage(fmt.Errorf("--helo %q: want one word", f.helo))
	}
	if strings.ContainsAny(f.serverName, "\r\n\x00 <>") {
		return usage(fmt.Errorf("--server-name %q: want a host name", f.serverName))
	}
	switch f.starttls {
	case relaytest.StartTLSNever, relaytest.StartTLSTry, relaytest.StartTLSOnly:
	default:
		return usage(fmt.Errorf("--starttls %q: want never, try or only", f.starttls))
	}
	if f.implicitTLS && f.starttls == relaytest.StartTLSOnly {
		return usage(errors.New("--tls and --starttls=only exclude each other"))
	}
	if f.timeout <= 0 {
		return usage(fmt.Errorf("--timeout %s: must be positive", f.timeout))
	}
	if f.parallel < 1 || f.parallel > 32 {
		return usage(fmt.Errorf("--parallel %d: want 1 to 32", f.parallel))
	}
	if f.errorsPerConn < 0 {
		return usage(fmt.Errorf("--errors-per-connection %d: must be 0 or more", f.errorsPerConn))
	}
	if f.ip != "" {
		if o.IP, err = netip.ParseAddr(strings.Trim(f.ip, "[]")); err != nil {
			return usage(fmt.Errorf("--ip %q: not an IP address", f.ip))
		}
	}
	if f.source != "" {
		if o.Source, err = netip.ParseAddr(f.source); err != nil {
			return usage(fmt.Errorf("--source %q: not an IP address", f.source))
		}
	}
	if f.auth != "" {
		u, p, ok := strings.Cut(f.auth, ":")
		if !ok || u == "" {
			return usage(fmt.Errorf("--auth: want USER:PASS"))
		}
		o.AuthUser, o.AuthPass = u, p
	}
	if f.data && !f.iOwn {
		lo, err := allLoopback(ctx, host)
		if err != nil {
			return usage(fmt.Errorf("--data: %w", err))
		}
		if !lo {
			return usage(fmt.Errorf("--data sends real test messages: refusing to run it against %s, which is not a loopback address, without --i-own-this-host", host))
		}
	}
	out := cmd.OutOrStdout()
	if f.verbose {
		o.Transcript = out
		if f.json {
			o.Transcript = cmd.ErrOrStderr()
		}
	}
	rep, runErr := relaytest.Run(ctx, o)
	if f.json {
		err = rep.WriteJSON(out)
	} else {
		err = rep.WriteText(out)
	}
	if err != nil {
		return err
	}
	switch {
	case rep.Outcome == "open":
		return &exitError{code: 1}
	case runErr != nil:
		return &exitError{code: 2, err: runErr}
	case rep.Outcome != "closed":
		return &exitError{code: 2}
	}
	return nil
}
