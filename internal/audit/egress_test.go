package audit_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/egress"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// TestEgressLockdown: a host without the lockdown is reported (high, with
// the safe fix); audit --fix installs and persists it without --yes, and
// the next audit is clean of it. A persisted file gone missing is
// reported and fixed the same way.
func TestEgressLockdown(t *testing.T) {
	t.Parallel()
	h := newHost(t, "", "")
	rep, code, _ := h.audit("--areas", "egress")
	f := mustFind(t, rep, "egress.no-lockdown", audit.High, "all")
	if f.AutoFix != "safe" || f.Fix != "relayguard egress apply --persist" || code != audit.ExitFindings {
		t.Errorf("fix %q (%s), exit %d", f.Fix, f.AutoFix, code)
	}
	rep, _, stderr := h.audit("--areas", "egress", "--fix")
	if !strings.Contains(stderr, "applying: relayguard egress apply --persist") || len(rep.Fixes) != 1 || !rep.Fixes[0].Applied {
		t.Fatalf("--fix: %+v\n%s", rep.Fixes, stderr)
	}
	if out := hosttest.Run(t, "ip", "netns", "exec", h.net.Server, "nft", "list", "table", "inet", egress.NFTTable); !strings.Contains(out, "meta skuid @uids") {
		t.Fatalf("lockdown not installed:\n%s", out)
	}
	unit := filepath.Join(h.dir, "units", egress.UnitName)
	if _, err := os.Stat(unit); err != nil {
		t.Fatalf("not persisted: %v", err)
	}
	rep, code, _ = h.audit("--areas", "egress")
	mustNotFind(t, rep, "egress.no-lockdown")
	mustNotFind(t, rep, "egress.not-persisted")
	if code != audit.ExitClean {
		t.Errorf("exit %d after the fix:\n%s", code, dump(rep))
	}

	os.Remove(unit)
	rep, _, _ = h.audit("--areas", "egress")
	mustFind(t, rep, "egress.not-persisted", audit.Medium, egress.UnitName)
	h.audit("--areas", "egress", "--fix")
	rep, _, _ = h.audit("--areas", "egress")
	mustNotFind(t, rep, "egress.not-persisted")
}

// TestEgressAllowedAndBlocked: a lockdown that lets a second user through
// is reported with that user; a program of another user that tries to
// reach a remote port 25 is dropped, `relayguard egress watch` names it in
// its log, and the audit reading that log reports the user, the program
// and its working directory.
func TestEgressAllowedAndBlocked(t *testing.T) {
	t.Parallel()
	hosttest.NeedRoot(t, "setpriv", "/usr/bin/python3")
	h := newHost(t, "", "")
	h.writeConfig("", "[egress]\npersist_dir = \""+filepath.Join(h.dir, "egress")+"\"\nallowed_users = [\"nobody\"]\n")
	rg := hosttest.Relayguard(t)
	hosttest.Run(t, "ip", "netns", "exec", h.net.Server, rg, "--config", h.cfg, "egress", "apply")
	watch := hosttest.Start(t, h.net.Server, "egress watch: listening", "--config", h.cfg, "egress", "watch")
	work := hosttest.TempDir(t, "rg-www-")
	script := "import socket\ntry:\n socket.create_connection(('198.51.100.9', 25), timeout=2)\nexcept Exception:\n pass\n"
	cmd := hosttest.Command(h.net.Server, "setpriv", "--reuid=33", "--regid=33", "--clear-groups", "/usr/bin/python3", "-c", script)
	cmd.Dir = work
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	watch.WaitOutput(t, `egress blocked.*uid=33`)
	logFile := filepath.Join(h.dir, "egress.log")
	if err := os.WriteFile(logFile, []byte(watch.Output()), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, _, _ := h.audit("--areas", "egress", "--log", logFile)
	mustFind(t, rep, "egress.allowed-user", audit.Medium, "nobody")
	mustFind(t, rep, "egress.not-persisted", audit.Medium, "")
	f := mustFind(t, rep, "egress.blocked-attempts", audit.High, "uid 33")
	ev := strings.Join(f.Evidence, " ")
	if !strings.Contains(ev, "python3") || !strings.Contains(ev, work) || !strings.Contains(ev, "198.51.100.9:25") {
		t.Errorf("evidence lacks the program, its directory or the destination: %q", ev)
	}
}

// TestEgressDrift: a lockdown installed by audit --fix from a configuration
// that locks port 25 only and lets the www-data group through is reported
// for the two open ports (low) and the group with its members (medium).
// The configuration then changes (all three ports, no group): the
// installed rules and the persisted ones differ from it, and both are
// reported; --fix applies and persists the configured lockdown, after
// which none of these is left. A program of www-data trying to reach a
// remote port 25 with nobody watching leaves only the drop rule's
// counter, which is reported as such (medium), naming no program.
func TestEgressDrift(t *testing.T) {
	t.Parallel()
	hosttest.NeedRoot(t, "setpriv", "/usr/bin/python3")
	h := newHost(t, "", "")
	persist := filepath.Join(h.dir, "egress")
	h.writeConfig("", "[egress]\npersist_dir = \""+persist+"\"\nports = [25]\nallowed_groups = [\"www-data\"]\n")
	if _, _, stderr := h.audit("--areas", "egress", "--fix"); !strings.Contains(stderr, "applying: relayguard egress apply --persist") {
		t.Fatalf("--fix did not install the lockdown:\n%s", stderr)
	}
	rep, _, _ := h.audit("--areas", "egress")
	for _, p := range []string{"465", "587"} {
		f := mustFind(t, rep, "egress.port-open", audit.Low, "remote port "+p+" ")
		if f.AutoFix != "safe" || !strings.Contains(f.Fix, "add "+p+" to [egress] ports") {
			t.Errorf("port-open %s: %+v", p, f)
		}
	}
	if len(find(rep, "egress.port-open")) != 2 {
		t.Errorf("port 25 is locked: %+v", find(rep, "egress.port-open"))
	}
	g := mustFind(t, rep, "egress.allowed-group", audit.Medium, "www-data")
	if !strings.Contains(strings.Join(g.Evidence, " "), "members: www-data") {
		t.Errorf("allowed-group evidence: %q", g.Evidence)
	}
	mustNotFind(t, rep, "egress.rules-differ")
	mustNotFind(t, rep, "egress.persist-differs")

	// The configuration changes; the installed and persisted rules do not.
	h.writeConfig("", "[egress]\npersist_dir = \""+persist+"\"\nports = [25, 465, 587]\n")
	rep, _, _ = h.audit("--areas", "egress")
	d := mustFind(t, rep, "egress.rules-differ", audit.Low, "configured: ports 25,465,587")
	if d.AutoFix != "safe" {
		t.Errorf("rules-differ: %+v", d)
	}
	mustFind(t, rep, "egress.persist-differs", audit.Medium, "")
	h.audit("--areas", "egress", "--fix")
	rep, code, _ := h.audit("--areas", "egress")
	for _, c := range []string{"egress.port-open", "egress.allowed-group", "egress.rules-differ", "egress.persist-differs", "egress.not-persisted", "egress.no-lockdown"} {
		mustNotFind(t, rep, c)
	}
	if code != audit.ExitClean {
		t.Errorf("exit %d after the fix:\n%s", code, dump(rep))
	}

	// A blocked attempt nobody logged.
	script := "import socket\ntry:\n socket.create_connection(('198.51.100.9', 25), timeout=2)\nexcept Exception:\n pass\n"
	cmd := hosttest.Command(h.net.Server, "setpriv", "--reuid=33", "--regid=33", "--clear-groups", "/usr/bin/python3", "-c", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	rep, _, _ = h.audit("--areas", "egress", "--log", filepath.Join(h.dir, "no-such.log"))
	mustFind(t, rep, "egress.blocked-counter", audit.Medium, "drop rule counter")
	mustNotFind(t, rep, "egress.blocked-attempts")
}
