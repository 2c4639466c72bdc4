// Package authtest holds the test harness of message authentication and
// transport security: commands such as dkimverify or opendkim-testmsg run
// in a private network and mount namespace whose /etc/resolv.conf points
// at an NSD of the test's own (RunWithDNS), zones signed with
// ldns-signzone (SignZone), a test CA (NewCA), and pebble, the ACME test
// CA (StartPebble). NSD and unbound on loopback ports come from
// internal/dnsutil/dnstest. Everything is stopped when the test ends.
package authtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
)

// Zone is one DNS zone: its origin and records in zone-file syntax, with
// names relative to the origin or absolute. SOA and NS records are added.
type Zone struct {
	Name    string
	Records []string
}

// Text renders the zone file (dnstest.ZoneText's SOA and NS).
func (z Zone) Text() string { return dnstest.ZoneText(z.Name, z.Records) }

// Files renders zones for dnstest.StartNSDFiles.
func Files(zones []Zone) map[string]string {
	out := map[string]string{}
	for _, z := range zones {
		out[z.Name] = z.Text()
	}
	return out
}

// nsdConf writes zone files and an nsd.conf for listening on ip@port into
// dir, for the NSD that RunWithDNS starts inside its namespace (on port
// 53, which dnstest's NSD cannot use).
func nsdConf(t testing.TB, dir, listen string, zones []Zone) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `server:
  ip-address: %s
  username: ""
  chroot: ""
  zonesdir: %[2]s
  pidfile: %[2]s/nsd.pid
  database: ""
  xfrdfile: %[2]s/xfrd.state
  zonelistfile: %[2]s/zone.list
  logfile: %[2]s/nsd.log
  verbosity: 1
  server-count: 1
  hide-version: yes
remote-control:
  control-enable: no
`, listen, dir)
	for _, z := range zones {
		name := strings.TrimSuffix(z.Name, ".")
		text := z.Text()
		file := name + ".zone"
		if err := os.WriteFile(filepath.Join(dir, file), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "zone:\n  name: %s\n  zonefile: %s\n", name, file)
	}
	conf := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// RunWithDNS runs argv with stdin in new network and mount namespaces
// where only loopback exists and /etc/resolv.conf names an NSD on
// 127.0.0.1:53 serving zones: tools that read the system resolver
// configuration (dkimpy, libopendkim, pyspf) see the test's DNS and nothing
// else. It returns the command's combined output and its exit error.
func RunWithDNS(t testing.TB, zones []Zone, stdin []byte, argv ...string) (string, error) {
	t.Helper()
	NeedRoot(t)
	nsd := delivertest.Need(t, "nsd")
	delivertest.Need(t, "unshare")
	ip := delivertest.Need(t, "ip")
	dir := t.TempDir()
	conf := nsdConf(t, dir, "127.0.0.1@53", zones)
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The script waits for NSD with a bounded loop of TCP connects (bash's
	// /dev/tcp), runs the command and stops NSD whatever happens.
	script := `set -e
"$RG_IP" link set lo up
mount --bind "$RG_RESOLV" /etc/resolv.conf
"$RG_NSD" -d -c "$RG_CONF" >"$RG_DIR/nsd.out" 2>&1 &
nsd=$!
trap 'kill $nsd 2>/dev/null; wait $nsd 2>/dev/null || true' EXIT
for i in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/53) 2>/dev/null && break; sleep 0.02; done
set +e
"$@"
`
	cmd := exec.Command("unshare", append([]string{"--net", "--mount", "--propagation", "private", "bash", "-c", script, "rg"}, argv...)...)
	cmd.Env = append(os.Environ(), "RG_IP="+ip, "RG_RESOLV="+resolv, "RG_NSD="+nsd, "RG_CONF="+conf, "RG_DIR="+dir)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// NeedRoot skips a test that needs root (namespaces, Postfix), except
// under CI, which runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root (namespaces)")
		}
		t.Skip("needs root (namespaces)")
	}
}
