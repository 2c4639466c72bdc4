package logwatch

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// TestDovecotUserNameCannotFrameAnotherAddress: Dovecot logs the user name
// a client sent as it came (spaces, "rip=…", commas), before the fields it
// adds itself. A real Dovecot 2.3 with an IMAP listener on loopback gets
// LOGIN attempts from loopback addresses whose user names carry another address;
// every failure read from its log must be the sender's. Before, the login
// process's line gave the first "rip=" — the client's — so that any IMAP
// client could have any address (a user's, a neighbour's, five of a /24 for
// a subnet ban) banned.
func TestDovecotUserNameCannotFrameAnotherAddress(t *testing.T) {
	t.Parallel()
	// auth_username_chars empty: every character reaches the passdb, so
	// the auth process's "passwd-file(U,IP,<S>)" lines carry the commas
	// too (with the default, it logs "?" and refuses the name).
	d, addr := startIMAPDovecot(t, "auth_username_chars =\n")
	names := []string{
		`x rip=192.0.2.77 `,
		`y rip=192.0.2.78, lip=127.0.0.1, session=<AAAA>`,
		`z>, method=PLAIN, rip=192.0.2.79, lip=127.0.0.1, session=<BBBB>`,
		`a,192.0.2.80,<CCCC>`,
		`b,192.0.2.81`,
		`c,192.0.2.82,<dddd>): unknown user`, // (Dovecot lower-cases names)
		`alice`,
	}
	// One source address per attempt (Dovecot's auth penalty delays
	// repeated failures of one address by up to 15 s): 127.0.0.10 and up.
	for i, name := range names {
		src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+i))}
		c, err := (&net.Dialer{LocalAddr: src, Timeout: 5 * time.Second}).Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		r.ReadString('\n')
		// An IMAP quoted string (RFC 3501 §4.3): the name as sent.
		fmt.Fprintf(c, "a LOGIN \"%s\" wrong\r\n", name)
		if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "a NO") {
			t.Fatalf("LOGIN %q: %q", name, l)
		}
		c.Close()
	}
	var logins, auths int
	hosttest.Eventually(t, "the login processes' lines", func() bool {
		b, _ := os.ReadFile(d.Log)
		return strings.Count(string(b), "(auth failed, ") == len(names)
	})
	b, err := os.ReadFile(d.Log)
	if err != nil {
		t.Fatal(err)
	}
	p := newTestParser()
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		e, ok := p.Parse(line)
		if !ok || e.Kind != event.AuthFailure {
			continue
		}
		if want, ok := sentFrom(e.User, names); !ok || e.IP != want {
			t.Errorf("failure of %q counted for %s, want %s:\n%s", e.User, e.IP, want, line)
		}
		if strings.Contains(line, "-login: ") {
			logins++
			if !strings.Contains(line, "user=<"+e.User+">") {
				t.Errorf("user %q, not the name sent:\n%s", e.User, line)
			}
			if e.Session == "" || strings.Contains(e.Session, "AAAA") || strings.Contains(e.Session, "BBBB") {
				t.Errorf("session %q, not Dovecot's:\n%s", e.Session, line)
			}
		} else {
			auths++
		}
	}
	if logins != len(names) || auths != len(names) {
		t.Fatalf("%d login-process and %d auth-process failures read, want %d each:\n%s", logins, auths, len(names), b)
	}
}

// sentFrom is the address the test sent user from.
func sentFrom(user string, names []string) (netip.Addr, bool) {
	for i, n := range names {
		if strings.EqualFold(n, user) { // Dovecot lower-cases names (auth_username_format %Lu)
			return netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i)}), true
		}
	}
	return netip.Addr{}, false
}

// startIMAPDovecot starts a real Dovecot with user alice (password
// "secret") and an IMAP listener on a free loopback port, extra appended to
// its configuration, and returns it and the listener's address once it
// accepts.
func startIMAPDovecot(t *testing.T, extra string) (*hosttest.Dovecot, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	d := hosttest.StartDovecot(t, hosttest.DovecotConfig{
		Users: map[string]string{"alice": "secret"},
		Extra: extra + fmt.Sprintf(`protocols = imap
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %d
  }
}
`, port),
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	hosttest.Eventually(t, "dovecot's IMAP listener", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return d, addr
}
