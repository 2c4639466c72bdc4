package firewall

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"
)

// runner executes firewall tools. iptables, ip6tables, ipset and ufw have no
// maintained Go library that drives them (go-iptables only wraps the same
// binaries and has no ipset or ufw), so the backends run the binaries, each
// call with a context and its output in the error.
type runner struct {
	// prefix is put before every command, e.g. {"ip", "netns", "exec", "ns"}
	// in tests.
	prefix []string
}

func (r runner) run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	argv := append(append(append([]string{}, r.prefix...), name), args...)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), &cmdError{argv: argv, err: err, stderr: strings.TrimSpace(errb.String() + " " + out.String())}
	}
	return out.String(), nil
}

type cmdError struct {
	argv   []string
	err    error
	stderr string
}

func (e *cmdError) Error() string {
	return fmt.Sprintf("firewall: %s: %v: %s", strings.Join(e.argv, " "), e.err, e.stderr)
}

func (e *cmdError) Unwrap() error { return e.err }

// cidr renders p the way the tools print it back: a single address without
// its /32 or /128.
func cidr(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// model is the ban list an exec-based enforcer was last given: prefix →
// expiry (zero: permanent).
type model map[netip.Prefix]time.Time

// merge records b, keeping the later expiry when the prefix is already
// banned; it returns the resulting expiry.
func (m model) merge(p netip.Prefix, until time.Time) time.Time {
	if u, ok := m[p]; ok {
		until = later(u, until)
	}
	m[p] = until
	return until
}
