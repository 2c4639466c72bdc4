package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// units are the systemd units the package ships.
var units = []string{
	"relayguard.service", "relayguard-mx.socket", "relayguard-submission.socket", "relayguard-submissions.socket",
	"relayguard-policy.service", "relayguard-milter.service", "relayguard-watch.service",
}

// serveUnits are enabled together (relayguard.service has Also= its sockets).
var serveUnits = []string{"relayguard.service", "relayguard-mx.socket", "relayguard-submission.socket", "relayguard-submissions.socket"}

// needPackagingTools fails (under CI) or skips the test when something the
// package test needs is missing.
func needPackagingTools(t *testing.T) {
	t.Helper()
	missing := func(what string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the package test needs %s", what)
		}
		t.Skipf("the package test needs %s", what)
	}
	if os.Geteuid() != 0 {
		missing("root (it mounts an overlay in namespaces of its own)")
	}
	for _, tool := range []string{"unshare", "nsenter", "setpriv", "ip", "dpkg-deb", "apt-get", "lintian",
		"systemd-analyze", "systemd-socket-activate", "man", "logrotate", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing(tool)
		}
	}
	if b, _ := os.ReadFile("/proc/filesystems"); !bytes.Contains(b, []byte("\toverlay\n")) {
		missing("overlayfs")
	}
}

// TestDebianPackage builds the .deb, inspects it, lints it, installs it in a
// sandbox (an overlay of this machine in namespaces of its own) next to
// Postfix and without it, checks the user, paths, modes, units, manuals and
// completions, runs relayguard serve the way relayguard.service runs it and
// sends it mail, reinstalls it, and purges it, checking what is left.
func TestDebianPackage(t *testing.T) {
	needPackagingTools(t)
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	deb, err := build(ctx, options{root: root, outDir: t.TempDir(), goarch: runtime.GOARCH, log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %s", filepath.Base(deb), time.Since(start).Round(time.Second))

	// lintian takes a while: it runs while the package is tried.
	var lint struct {
		out []byte
		err error
	}
	var lintDone sync.WaitGroup
	lintDone.Add(1)
	go func() {
		defer lintDone.Done()
		lint.out, lint.err = exec.CommandContext(ctx, "lintian", "--tag-display-limit", "0", "--fail-on", "error", deb).CombinedOutput()
	}()
	defer lintDone.Wait()

	pkg := inspectPackage(t, deb)
	sb := newSandbox(t)
	f, err := os.Open(deb)
	if err != nil {
		t.Fatal(err)
	}
	sb.run(f, "sh", "-c", "cat > /tmp/relayguard.deb")
	f.Close()

	postfix := strings.TrimSpace(sb.sh(`dpkg-query -W -f='${db:Status-Status}' postfix 2>/dev/null || true`))
	if postfix != "installed" {
		t.Fatalf("postfix is %q on this machine: the package test installs relayguard next to it (.ci/packages.d lists it)", postfix)
	}

	if !t.Run("install next to postfix", func(t *testing.T) {
		out, errOut := sb.run(nil, "apt-get", "install", "-y", "-q", "--no-install-recommends", "/tmp/relayguard.deb")
		if !strings.Contains(errOut+out, "relayguard: postfix is installed, so relayguard serve") {
			t.Errorf("the postinst did not say why relayguard serve is not started:\n%s\n%s", out, errOut)
		}
		for _, u := range serveUnits {
			if state := isEnabled(sb, u); state != "disabled" {
				t.Errorf("%s is %s next to postfix; want disabled (it would take ports 25/465/587)", u, state)
			}
		}
		for _, u := range []string{"relayguard-policy.service", "relayguard-milter.service", "relayguard-watch.service"} {
			if state := isEnabled(sb, u); state != "disabled" {
				t.Errorf("%s is %s after install; want disabled until the operator enables it", u, state)
			}
		}
	}) {
		t.FailNow()
	}

	t.Run("user, paths and modes", func(t *testing.T) { checkInstalled(t, sb, pkg) })
	t.Run("units", func(t *testing.T) { checkUnits(t, sb, root) })
	t.Run("manuals, completion and logrotate", func(t *testing.T) { checkManuals(t, sb) })
	t.Run("serve as relayguard.service runs it", func(t *testing.T) { checkServe(t, sb) })

	t.Run("reinstall keeps the operator's choice", func(t *testing.T) {
		sb.run(nil, "dpkg", "-i", "/tmp/relayguard.deb")
		if state := isEnabled(sb, "relayguard.service"); state != "disabled" {
			t.Errorf("after reinstall relayguard.service is %s, want disabled as before", state)
		}
		sb.run(nil, "systemctl", "enable", "relayguard.service")
		sb.run(nil, "dpkg", "-i", "/tmp/relayguard.deb")
		for _, u := range serveUnits {
			if state := isEnabled(sb, u); state != "enabled" {
				t.Errorf("the operator enabled relayguard; after reinstall %s is %s", u, state)
			}
		}
		if out := sb.sh(`ls /var/lib/relayguard`); !strings.Contains(out, "relayguard.db") {
			t.Errorf("reinstall lost the data directory's contents: %q", out)
		}
	})

	t.Run("purge", func(t *testing.T) { purge(t, sb) })

	t.Run("install without another mail server", func(t *testing.T) {
		// Postfix goes (its scripts ask policy-rc.d, which says no).
		sb.run(nil, "dpkg", "--remove", "--force-depends", "postfix")

		// A process listening on port 25 still keeps relayguard off it.
		var ln net.Listener
		if err := sb.inNetns(func() (err error) { ln, err = net.Listen("tcp", ":25"); return }); err != nil {
			t.Fatal(err)
		}
		out, errOut := sb.run(nil, "dpkg", "-i", "/tmp/relayguard.deb")
		ln.Close()
		if !strings.Contains(errOut+out, "a process listens on port 25, 465 or 587") {
			t.Errorf("with port 25 taken, the postinst did not say so:\n%s\n%s", out, errOut)
		}
		if state := isEnabled(sb, "relayguard.service"); state != "disabled" {
			t.Errorf("with port 25 taken relayguard.service is %s, want disabled", state)
		}
		purge(t, sb)

		out, errOut = sb.run(nil, "dpkg", "-i", "/tmp/relayguard.deb")
		if strings.Contains(errOut+out, "neither enabled nor started") {
			t.Errorf("nothing holds the mail ports, yet the postinst held back:\n%s\n%s", out, errOut)
		}
		for _, u := range serveUnits {
			if state := isEnabled(sb, u); state != "enabled" {
				t.Errorf("without another mail server %s is %s, want enabled", u, state)
			}
		}
		purge(t, sb)
	})

	lintDone.Wait()
	t.Run("lintian", func(t *testing.T) {
		t.Logf("lintian:\n%s", lint.out)
		if lint.err != nil {
			t.Errorf("lintian: %v", lint.err)
		}
		if m := regexp.MustCompile(`(?m)^E: .*$`).FindAllString(string(lint.out), -1); len(m) > 0 {
			t.Errorf("lintian errors:\n%s", strings.Join(m, "\n"))
		}
	})
}

// isEnabled asks systemctl (which works on the files, without a running
// systemd) whether a unit is enabled in the sandbox.
func isEnabled(sb *sandbox, unit string) string {
	out, _, _ := sb.try(nil, "systemctl", "is-enabled", unit)
	return strings.TrimSpace(out)
}

// pkgInfo is what inspectPackage learned.
type pkgInfo struct {
	version string // the Debian version
	extract string // the package's files, unpacked
}

// inspectPackage checks the package's control data and file list.
func inspectPackage(t *testing.T, deb string) pkgInfo {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends", "Section").Output()
	if err != nil {
		t.Fatalf("dpkg-deb -f: %v", err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		fields[k] = v
	}
	if fields["Package"] != "relayguard" || fields["Section"] != "mail" || fields["Architecture"] == "" || !strings.Contains(fields["Depends"], "adduser") {
		t.Errorf("control fields: %v", fields)
	}
	info := pkgInfo{version: fields["Version"], extract: t.TempDir()}
	if out, err := exec.Command("dpkg-deb", "-x", deb, info.extract).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}

	out, err = exec.Command("dpkg-deb", "-c", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb -c: %v", err)
	}
	perms := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c line %q", line)
		}
		path := strings.TrimPrefix(f[5], ".")
		perms[path] = f[0]
		if f[1] != "root/root" {
			t.Errorf("%s belongs to %s, want root/root", path, f[1])
		}
		if strings.ContainsAny(f[0][1:], "sStT") {
			t.Errorf("%s has mode %s: no setuid, setgid or sticky bit expected", path, f[0])
		}
		if strings.HasPrefix(path, "/var/") {
			t.Errorf("%s: state is made at install (tmpfiles.d), not shipped", path)
		}
	}
	want := map[string]string{
		"/usr/sbin/relayguard":                                        "-rwxr-xr-x",
		"/etc/relayguard/relayguard.toml":                             "-rw-r-----",
		"/usr/lib/tmpfiles.d/relayguard.conf":                         "-rw-r--r--",
		"/etc/logrotate.d/relayguard":                                 "-rw-r--r--",
		"/etc/fail2ban/filter.d/relayguard.conf":                      "-rw-r--r--",
		"/etc/fail2ban/jail.d/relayguard.conf":                        "-rw-r--r--",
		"/usr/share/man/man5/relayguard.toml.5.gz":                    "-rw-r--r--",
		"/usr/share/bash-completion/completions/relayguard":           "-rw-r--r--",
		"/usr/share/zsh/vendor-completions/_relayguard":               "-rw-r--r--",
		"/usr/share/fish/vendor_completions.d/relayguard.fish":        "-rw-r--r--",
		"/usr/share/doc/relayguard/copyright":                         "-rw-r--r--",
		"/usr/share/doc/relayguard/changelog.Debian.gz":               "-rw-r--r--",
		"/usr/share/relayguard/crowdsec/scenarios/relayguard-bf.yaml": "-rw-r--r--",
	}
	for _, u := range units {
		want["/lib/systemd/system/"+u] = "-rw-r--r--"
	}
	for p, mode := range want {
		if perms[p] != mode {
			t.Errorf("%s: mode %q in the package, want %q", p, perms[p], mode)
		}
	}

	// The manual pages are exactly those the packaged binary writes: one
	// per command.
	gen := t.TempDir()
	if out, err := exec.Command(filepath.Join(info.extract, "usr/sbin/relayguard"), "gen-docs", "--man", gen).CombinedOutput(); err != nil {
		t.Fatalf("gen-docs: %v\n%s", err, out)
	}
	var wantPages, gotPages []string
	generated, _ := filepath.Glob(filepath.Join(gen, "*.8"))
	for _, p := range generated {
		wantPages = append(wantPages, "/usr/share/man/man8/"+filepath.Base(p)+".gz")
	}
	for p := range perms {
		if strings.HasPrefix(p, "/usr/share/man/man8/") && strings.HasSuffix(p, ".gz") {
			gotPages = append(gotPages, p)
		}
	}
	slices.Sort(wantPages)
	slices.Sort(gotPages)
	if !slices.Equal(wantPages, gotPages) || !slices.Contains(gotPages, "/usr/share/man/man8/relayguard-serve.8.gz") || !slices.Contains(gotPages, "/usr/share/man/man8/relayguard-milter.8.gz") {
		t.Errorf("man8 pages in the package:\n%v\nwant:\n%v", gotPages, wantPages)
	}

	out, err = exec.Command("dpkg-deb", "-I", deb, "conffiles").Output()
	if err != nil {
		t.Fatalf("dpkg-deb -I conffiles: %v", err)
	}
	conffiles := strings.Fields(string(out))
	slices.Sort(conffiles)
	wantConf := []string{"/etc/fail2ban/filter.d/relayguard.conf", "/etc/fail2ban/jail.d/relayguard.conf", "/etc/logrotate.d/relayguard", "/etc/relayguard/relayguard.toml"}
	if !slices.Equal(conffiles, wantConf) {
		t.Errorf("conffiles %v, want %v", conffiles, wantConf)
	}

	// The default configuration: config print over dist/debian/relayguard.toml,
	// Debian's paths, ports from systemd, nothing of the build machine.
	b, err := os.ReadFile(filepath.Join(info.extract, "etc/relayguard/relayguard.toml"))
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Hostname     string   `toml:"hostname"`
		DataDir      string   `toml:"data_dir"`
		LocalDomains []string `toml:"local_domains"`
		TLS          struct {
			CertFile string `toml:"cert_file"`
		} `toml:"tls"`
		Listener []struct {
			Name, Address string
		} `toml:"listener"`
	}
	if err := toml.Unmarshal(b, &conf); err != nil {
		t.Fatalf("packaged relayguard.toml: %v", err)
	}
	if !bytes.Contains(b, []byte("# Name used in the SMTP banner")) {
		t.Error("packaged relayguard.toml lacks config print's comments")
	}
	if conf.DataDir != "/var/lib/relayguard" {
		t.Errorf("data_dir = %q", conf.DataDir)
	}
	host, _ := os.Hostname()
	if conf.Hostname != "" || len(conf.LocalDomains) != 0 || conf.TLS.CertFile != "" {
		t.Errorf("packaged relayguard.toml pins values of the build machine (%s): hostname %q, local_domains %q, cert_file %q",
			host, conf.Hostname, conf.LocalDomains, conf.TLS.CertFile)
	}
	var listeners []string
	for _, l := range conf.Listener {
		listeners = append(listeners, l.Name+"="+l.Address)
	}
	if want := []string{"mx=systemd:mx", "submission=systemd:submission", "submissions=systemd:submissions"}; !slices.Equal(listeners, want) {
		t.Errorf("listeners %v, want %v", listeners, want)
	}
	return info
}

// checkInstalled checks the system user, the paths and their modes, and
// the binary on PATH.
func checkInstalled(t *testing.T, sb *sandbox, pkg pkgInfo) {
	pw := strings.Split(strings.TrimSpace(sb.sh(`getent passwd relayguard`)), ":")
	if len(pw) != 7 {
		t.Fatalf("getent passwd relayguard: %q", pw)
	}
	if uid, _ := strconv.Atoi(pw[2]); uid == 0 || uid >= 1000 {
		t.Errorf("relayguard uid %s: want a system uid (1-999)", pw[2])
	}
	if pw[5] != "/var/lib/relayguard" || pw[6] != "/usr/sbin/nologin" {
		t.Errorf("relayguard home %q shell %q", pw[5], pw[6])
	}
	if out := sb.sh(`id -gn relayguard`); strings.TrimSpace(out) != "relayguard" {
		t.Errorf("relayguard's group is %q", out)
	}
	modes := map[string]string{
		"/var/lib/relayguard":             "relayguard:relayguard 750",
		"/var/log/relayguard":             "relayguard:adm 750",
		"/etc/relayguard":                 "root:root 755",
		"/etc/relayguard/relayguard.toml": "root:relayguard 640",
		"/usr/sbin/relayguard":            "root:root 755",
	}
	for p, want := range modes {
		if got := strings.TrimSpace(sb.sh(`stat -c '%U:%G %a' ` + p)); got != want {
			t.Errorf("%s is %s, want %s", p, got, want)
		}
	}
	if p := strings.TrimSpace(sb.sh(`command -v relayguard`)); p != "/usr/sbin/relayguard" {
		t.Errorf("relayguard on PATH is %q", p)
	}
	out := sb.sh(`relayguard version`)
	first, _, _ := strings.Cut(out, "\n")
	goVersion := strings.TrimPrefix(first, "relayguard ")
	if DebVersion(goVersion) != pkg.version || !strings.Contains(out, "\ncommit ") {
		t.Errorf("relayguard version printed %q; the package is %s", out, pkg.version)
	}
	// The packaged binary reads /etc/relayguard/relayguard.toml by default;
	// the relayguard user may read it, others may not.
	if out := sb.sh(`setpriv --reuid=relayguard --regid=relayguard --init-groups relayguard config check 2>&1`); !strings.Contains(out, "configuration OK") {
		t.Errorf("config check as relayguard: %q", out)
	}
	if _, _, err := sb.try(nil, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat", "/etc/relayguard/relayguard.toml"); err == nil {
		t.Error("nobody can read /etc/relayguard/relayguard.toml")
	}
}
