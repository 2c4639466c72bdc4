// Package authtest runs, for tests, the real DNS servers that message
// authentication and transport security are checked against: NSD serving
// zones (optionally DNSSEC-signed with ldns-signzone), unbound validating
// them, and commands such as dkimverify or opendkim-testmsg run in a
// private network and mount namespace whose /etc/resolv.conf points at an
// NSD of the test's own. Everything listens on loopback, on ports the
// kernel chose, and is stopped when the test ends.
package authtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
)

// Zone is one DNS zone: its origin and records in zone-file syntax, with
// names relative to the origin or absolute. SOA and NS records are added.
type Zone struct {
	Name    string
	Records []string
}

// Text renders the zone file.
func (z Zone) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s.\n$TTL 300\n", strings.TrimSuffix(z.Name, "."))
	fmt.Fprintf(&b, "@ IN SOA ns.%[1]s. hostmaster.%[1]s. 1 3600 600 86400 300\n", strings.TrimSuffix(z.Name, "."))
	b.WriteString("@ IN NS ns\nns IN A 127.0.0.1\n")
	for _, r := range z.Records {
		b.WriteString(r + "\n")
	}
	return b.String()
}

// NSD is a running NSD.
type NSD struct {
	Addr string // 127.0.0.1:port, UDP and TCP
	Dir  string
}

// nsdConf writes zone files and an nsd.conf for listening on ip@port into
// dir. signed, if set, holds zone files to use instead of Text().
func nsdConf(t testing.TB, dir, listen string, zones []Zone, signed map[string]string) string {
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
		if s, ok := signed[name]; ok {
			text = s
		}
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

// StartNSD serves zones on a free loopback port until the test ends.
// signed maps zone names to signed zone files (SignZone) served instead of
// the plain ones.
func StartNSD(t testing.TB, zones []Zone, signed map[string]string) *NSD {
	t.Helper()
	bin := delivertest.Need(t, "nsd")
	dir := t.TempDir()
	for try := 0; ; try++ {
		port := freeUDPTCPPort(t)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf := nsdConf(t, dir, "127.0.0.1@"+strconv.Itoa(port), zones, signed)
		cmd := exec.Command(bin, "-d", "-c", conf)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("nsd: %v", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		if waitDNS(addr, zones[0].Name, done) {
			t.Cleanup(func() { cmd.Process.Kill(); <-done })
			return &NSD{Addr: addr, Dir: dir}
		}
		cmd.Process.Kill()
		<-done
		log, _ := os.ReadFile(filepath.Join(dir, "nsd.log"))
		if try >= 3 {
			t.Fatalf("nsd did not start on %s: %s%s", addr, out.String(), log)
		}
	}
}

// freeUDPTCPPort returns a loopback port free for both UDP and TCP a
// moment ago.
func freeUDPTCPPort(t testing.TB) int {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		pc.Close()
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return 0
}

// waitDNS waits until a server answers an SOA query for zone over TCP
// (readiness, bounded), or the process exits.
func waitDNS(addr, zone string, exited chan struct{}) bool {
	for range 200 {
		select {
		case <-exited:
			return false
		default:
		}
		if soaAnswered(addr, zone) {
			return true
		}
		time.Sleep(25 * time.Millisecond)
	}
	return false
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
	conf := nsdConf(t, dir, "127.0.0.1@53", zones, nil)
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

// soaAnswered reports whether addr answers an SOA query for zone over TCP.
func soaAnswered(addr, zone string) bool {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(zone), dns.TypeSOA)
	c := &dns.Client{Net: "tcp", Timeout: time.Second}
	in, _, err := c.Exchange(m, addr)
	return err == nil && in.Rcode == dns.RcodeSuccess && len(in.Answer) > 0
}
