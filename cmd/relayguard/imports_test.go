package main

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/relayguard/relayguard/"

// importRules pin the directions between relayguard's packages
// (docs/ARCHITECTURE.md, "Import directions"). Each names a package and
// what it must not depend on, directly or through another package.
var importRules = []struct {
	pkg    string
	not    []string // package paths; a trailing "/..." also forbids the packages below
	reason string
}{
	{"internal/config", []string{"internal/dnsbl", "github.com/miekg/dns"},
		"everything reads the configuration; it must not pull in DNS list code"},
	{"internal/queue", []string{"internal/deliver/..."},
		"the spool does not depend on how mail leaves: transports implement queue.Deliverer"},
	{"internal/ratelimit", []string{"internal/smtpd", "internal/policyd", "internal/queue"},
		"send limits serve every front door: front doors import ratelimit, not the reverse"},
	{"internal/policy", []string{"internal/smtpd", "internal/policyd", "internal/milter"},
		"the policy engine does not know which front door asked"},
	{"internal/guard", []string{"internal/smtpd", "internal/policyd", "internal/logwatch"},
		"the guard consumes events; it does not know who produced them"},
	{"internal/deliver", []string{"internal/smtpd", "internal/ratelimit"},
		"delivery takes what the scheduler hands it"},
	{"internal/store", []string{"internal/guard", "internal/ratelimit", "internal/limits", "internal/config"},
		"the backends know no state kind's rules: each state kind imports store"},
}

// leaves import no other relayguard package but the ones listed: the
// values every layer shares.
var leaves = map[string][]string{
	"internal/event":   nil,
	"internal/ban":     nil,
	"internal/address": nil,
	"internal/safeio":  nil,
	"internal/faillog": nil,
	"internal/redact":  nil,
	"internal/logline": nil,
	"internal/maillog": {"internal/event", "internal/logline"},
	"internal/store":   {"internal/ban", "internal/faillog", "internal/redact"},
}

// TestImportDirections checks the rules above with `go list` over the whole
// module, and that only the command imports the serve wiring.
func TestImportDirections(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{join .Imports " "}}|{{join .Deps " "}}`, "../../...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	imports := map[string][]string{} // direct, module packages only
	deps := map[string][]string{}    // transitive, all
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 3 {
			t.Fatalf("go list line %q", line)
		}
		pkg := strings.TrimPrefix(f[0], module)
		for _, i := range strings.Fields(f[1]) {
			if strings.HasPrefix(i, module) {
				imports[pkg] = append(imports[pkg], strings.TrimPrefix(i, module))
			}
		}
		for _, d := range strings.Fields(f[2]) {
			deps[pkg] = append(deps[pkg], strings.TrimPrefix(d, module))
		}
		if _, ok := imports[pkg]; !ok {
			imports[pkg] = nil
		}
	}
	for _, r := range importRules {
		d, ok := deps[r.pkg]
		if !ok {
			t.Errorf("rule for %s: no such package", r.pkg)
			continue
		}
		for _, bad := range r.not {
			for _, got := range d {
				if matchPkg(bad, got) {
					t.Errorf("%s depends on %s (%s)", r.pkg, got, r.reason)
				}
			}
		}
	}
	for pkg, allowed := range leaves {
		if _, ok := imports[pkg]; !ok {
			t.Errorf("leaf %s: no such package", pkg)
		}
		for _, i := range imports[pkg] {
			if !slices.Contains(allowed, i) {
				t.Errorf("%s imports %s; it is a leaf that may import only %v", pkg, i, allowed)
			}
		}
	}
	for pkg, im := range imports {
		if slices.Contains(im, "internal/server") && pkg != "cmd/relayguard" {
			t.Errorf("%s imports internal/server, serve's wiring; only cmd/relayguard may", pkg)
		}
	}
}

// matchPkg reports whether pkg is pattern, or below it for "dir/...".
func matchPkg(pattern, pkg string) bool {
	if dir, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == dir || strings.HasPrefix(pkg, dir+"/")
	}
	return pkg == pattern
}

// TestOneWayToRegisterMetrics: no production code registers on, or serves,
// Prometheus's global default registry; components take a Registerer and
// use prom.Register (internal/prom, docs/ARCHITECTURE.md "Metrics").
func TestOneWayToRegisterMetrics(t *testing.T) {
	banned := []string{"prometheus.DefaultRegisterer", "prometheus.DefaultGatherer", "prometheus.MustRegister(",
		"prometheus.Register(", "promauto.", "promhttp.Handler()", ".MustRegister("}
	checked := 0
	for _, root := range []string{"../../internal", "../../cmd", "../../bench"} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			if strings.HasSuffix(filepath.ToSlash(p), "internal/prom/metrics.go") {
				return nil // the one place that registers the runtime collectors
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			checked++
			for _, bad := range banned {
				if strings.Contains(string(b), bad) {
					t.Errorf("%s uses %s; take a prometheus.Registerer and use prom.Register", p, bad)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if checked < 50 {
		t.Fatalf("only %d files checked", checked)
	}
}
