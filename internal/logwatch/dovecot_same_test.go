package logwatch

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/logline"
)

// dovecotCorpus is what the fast Dovecot parser is held to the reference
// with: (program, message) pairs of every kind of line it reads, users
// with commas, "): " and "rip=" in them, sessions, addresses of every
// form, and each message cut short at every byte.
func dovecotCorpus() [][2]string {
	progs := []string{"dovecot", "dovecot/imap-login", "imap-login", "auth", "auth-worker(12)", "dovecot-auth", "auth(default)", "pop3-login", "submission-login"}
	msgs := []string{
		"imap-login: Disconnected (auth failed, 3 attempts in 12 secs): user=<bob>, method=PLAIN, rip=203.0.113.50, lip=192.0.2.1, TLS, session=<abcd>",
		"pop3-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<carol>, method=PLAIN, rip=2001:db8:77::9, lip=2001:db8::1, session=<x>",
		"submission-login: Login: user=<dave>, method=LOGIN, rip=198.51.100.66, lip=192.0.2.1, TLS, session=<y>",
		"imap-login: Login: user=<alice>, method=PLAIN, rip=198.51.100.20, lip=192.0.2.1, mpid=4242, TLS, session=<z>",
		"auth: passwd-file(admin,45.148.10.1,<sess1>): unknown user",
		"auth: passwd-file(bob,45.148.10.2): Password mismatch",
		"auth-worker(3141): pam(bob,2001:db8:5::5,<s>): pam_authenticate() failed: Authentication failure (Password mismatch?)",
		"auth-worker(3141): pam(bob,2001:db8:5::5,<s>): pam_authenticate() failed: User not known to the underlying authentication module",
		"auth: Info: passwd-file(alice@example.test,192.0.2.50,<dq3LV2bN>): Password mismatch",
		"imap-login: Info: Disconnected: Connection closed (auth failed, 3 attempts in 18 secs): user=<alice@example.test>, method=PLAIN, rip=192.0.2.50, lip=192.0.2.1, session=<x>",
		"imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, session=<abcd>",
		"auth: passwd-file(bob,1.2.3.4): lookup failed",
		"auth: passwd-file(a,b,c,1.2.3.4,<s>): unknown user", "auth: passwd-file(a,b,c,1.2.3.4,): unknown user",
		"auth: passwd-file(a,1.2.3.4,<s>,<t>): unknown user", "auth: passwd-file(1.2.3.4,<s>): unknown user",
		"auth: passwd-file(1.2.3.4): unknown user", "auth: passwd-file(,1.2.3.4): unknown user", "auth: passwd-file(a,): unknown user",
		"auth: passwd-file(a): b,1.2.3.4): unknown user", "auth: passwd-file(a,1.2.3.4): unknown user (given password: x): y",
		"auth: passwd-file(a,1.2.3.4,<s): unknown user", "auth: passwd-file(a,1.2.3.4,s>): Invalid credentials",
		"auth: passwd-file(a,1.2.3.4,<>): invalid credentials", "auth: (a,1.2.3.4): unknown user", "auth: x): (a,1.2.3.4 unknown user",
		"auth: conn unix:auth-worker (uid=143): auth-worker<13247>: sql(bob,192.0.2.9,<s>): Password mismatch",
		"auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=bob rhost=192.0.2.7 user=bob",
		"auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=bob rhost=192.0.2.7",
		"imap-login: Disconnected (auth failed, 2 attempts in 4 secs): user=<x, rip=6.6.6.6, session=<q>>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.2, session=<r>",
		"imap-login: Disconnected (tried to use disabled plaintext auth): user=<>, rip=192.0.2.3, lip=192.0.2.1, session=<t>",
		"imap-login: Disconnected (tried to use disallowed plaintext auth): rip=192.0.2.3",
		"imap-login: Disconnected (proxy dest auth failed): user=<u>, rip=192.0.2.3",
		"imap-login: Disconnected (no auth attempts in 0 secs): user=<>, rip=192.0.2.3, lip=192.0.2.1, session=<t>",
		"imap-login: Disconnected (auth failed, x attempts): user=<u>, method=PLAIN, rip=192.0.2.3",
		"imap-login: Disconnected (auth failed, 7 attempts): user=<u>, method=PLAIN, rip=::ffff:192.0.2.3, lip=x",
		"Warning: imap-login: x", "Error: auth: passwd-file(a,1.2.3.4): unknown user", "Panic: x", "",
		// the attempts read in line (leadingDigits), and where Atoi reads them
		"imap-login: Disconnected (auth failed, +3 attempts in 2 secs): user=<u>, method=PLAIN, rip=192.0.2.3",
		"imap-login: Disconnected (auth failed, -3 attempts in 2 secs): user=<u>, method=PLAIN, rip=192.0.2.3",
		"imap-login: Disconnected (auth failed, 0 attempts in 2 secs): user=<u>, rip=192.0.2.3",
		"imap-login: Disconnected (auth failed, 007 attempts in 2 secs): user=<u>, rip=192.0.2.3",
		"imap-login: Disconnected (auth failed, 123456789012345678 attempts in 2 secs): user=<u>, rip=192.0.2.3",
		"imap-login: Disconnected (auth failed, 1234567890123456789 attempts in 2 secs): user=<u>, rip=192.0.2.3",
		"imap-login: Disconnected (auth failed, 99999999999999999999 attempts in 2 secs): user=<u>, rip=192.0.2.3",
		"imap-login: Disconnected (auth failed, 3): user=<u>, rip=192.0.2.3", "imap-login: Disconnected (auth failed, 3 ): user=<u>, rip=192.0.2.3",
		"imap-login: Disconnected (auth failed, 3 attempts user=<u>, rip=192.0.2.3", "imap-login: Disconnected (auth failed, 3x attempts): rip=192.0.2.3",
		// the user's and the method's fields read without a search (loginMethod, "Login: user=<")
		"imap-login: Login: user=<user=<x>>, method=PLAIN, rip=192.0.2.3, lip=192.0.2.1",
		"imap-login: Login: user=<a>, method=PLAIN rip=192.0.2.3", "imap-login: Login: user=<a>, method=, rip=192.0.2.3",
		"imap-login: Login: user=<a>,method=X, method=Y, rip=192.0.2.3", "imap-login: Login: user=<a>, methods=X, method=Y, rip=192.0.2.3",
		"imap-login: Login: user=<a> method=X, rip=192.0.2.3", "imap-login: Login: user=<a, rip=192.0.2.3", "imap-login: Login: user=, rip=192.0.2.3",
		"imap-login: Login:  user=<a>, method=X, rip=192.0.2.3", "imap-login: Login: xuser=<a>, method=X, rip=192.0.2.3",
		// around what the usual lines' heads are read by (dovecotPassdb,
		// dovecotLoginHead): a second process, a level, "conn", pam_unix,
		// other ':' before, in and after the fields
		"auth: auth(default): passwd-file(a,1.2.3.4): unknown user", "auth: auth-worker(9): passwd-file(a,1.2.3.4): unknown user",
		"auth: auth: passwd-file(a,1.2.3.4): unknown user", "auth: dovecot: passwd-file(a,1.2.3.4): unknown user",
		"auth: auth(a,1.2.3.4): unknown user", "auth: auth-worker(a,1.2.3.4,<s>): unknown user",
		"auth: x-login(a,1.2.3.4): unknown user", "auth: conn a(b,1.2.3.4): unknown user", "auth: conn a>: passwd-file(a,1.2.3.4): unknown user",
		"auth: pam_unix(a,1.2.3.4): unknown user", "auth: Info: passwd-file(a,1.2.3.4): unknown user",
		"imap-login: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=bob rhost=192.0.2.7 user=bob",
		"imap-login: conn unix:auth-worker (uid=143): auth-worker<13247>: sql(bob,192.0.2.9,<s>): Password mismatch",
		"imap-login: dovecot: Login: user=<a>, method=PLAIN, rip=192.0.2.3", "imap-login: pop3-login: Login: user=<a>, method=PLAIN, rip=192.0.2.3",
		"auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=bob rhost=192.0.2.7",
		"auth: passwd-file(a,2001:db8::1,<s>): unknown user", "auth: passwd-file(a,2001:db8:0:0:0:0:0:1): Password mismatch",
		"auth: passwd-file(a,1.2.3.4): unknown: user", "auth: passwd-file(a:b,1.2.3.4): unknown user", "auth: passwd-file(a: b,1.2.3.4): unknown user",
		"auth: (a,1.2.3.4): unknown user", "auth: x): (a,1.2.3.4): unknown user", "auth: x)y: (a,1.2.3.4): unknown user", "auth: ): x",
		"auth: passwd-file(a,1.2.3.4)): Password mismatch", "auth: passwd-file a,1.2.3.4): unknown user", "auth: passwd-file(a,1.2.3.4): ",
		"auth: passwd-file(a,1.2.3.4):: unknown user", "auth: passwd-file(a,1.2.3.4) : unknown user",
		"imap-login: auth-worker(1): passwd-file(a,1.2.3.4): unknown user", "imap-login: auth: passwd-file(a,1.2.3.4): unknown user",
		"imap-login: x-login: Login: user=<a>, rip=1.2.3.4", "imap-login: dovecot: Login: user=<a>, rip=1.2.3.4",
		"imap-login: Info: Login: user=<a>, rip=1.2.3.4", "imap-login: Debug: Disconnected (auth failed, 1 attempts in 2 secs): user=<a>, rip=1.2.3.4",
		"imap-login: conn x>: Login: user=<a>, rip=1.2.3.4", "imap-login: conn Login: user=<a>, rip=1.2.3.4",
		"imap-login: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=bob rhost=192.0.2.7",
		"imap-login:Login: user=<a>, rip=1.2.3.4", "imap-login:: Login: user=<a>, rip=1.2.3.4", "imap-login: : Login: user=<a>, rip=1.2.3.4",
		"-login: Login: user=<a>, rip=1.2.3.4", "x-login: Login: user=<a>, rip=1.2.3.4", "imap-logi: Login: user=<a>, rip=1.2.3.4",
		"imap-login: Disconnected:x (auth failed, 1 attempts in 2 secs): user=<a>, rip=1.2.3.4",
		"imap-login: Disconnected (auth failed, 1 attempts in 2 secs)x-login: user=<a>, rip=1.2.3.4",
		"imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<a: b>, method=PLAIN, rip=1.2.3.4, lip=1.2.3.5",
		"imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<a>, method=PLAIN, rip=2001:db8::1, lip=2001:db8::2",
		"imap-login: Login: user=<a: auth-login: b>, method=PLAIN, rip=1.2.3.4", "imap-login: Login:", "imap-login: Login: ", "imap-login: Login:auth-login: user=<a>, rip=1.2.3.4",
	}
	for _, a := range []string{"0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.02.3.4", "1.2.3", "1.2.3.4.5", "1..3.4", ".1.2.3", "1.2.3.", "1.2.3.4a", "fe80::1%eth0", "::ffff:1.2.3.4", "1.2.3.4)", "1.2.3.4 x", "1.2.3.004", "10.0.0.10", "999.1.1.1", ""} {
		msgs = append(msgs, "auth: passwd-file(u,"+a+",<s>): unknown user",
			"imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<u>, method=PLAIN, rip="+a+", lip=192.0.2.1")
	}
	var out [][2]string
	for _, m := range msgs {
		for _, p := range progs {
			out = append(out, [2]string{p, m})
		}
		for i := range len(m) {
			out = append(out, [2]string{"dovecot", m[:i]})
		}
	}
	return out
}

// TestDovecotSameAsReference: parseDovecot gives exactly the reference's
// event (dovecot_ref_test.go: the code before it was made faster) on the
// corpus and, with REPORT_SAME_LOG set, on every Dovecot line of that log.
func TestDovecotSameAsReference(t *testing.T) {
	cases := dovecotCorpus()
	if name := os.Getenv("REPORT_SAME_LOG"); name != "" {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var p logline.Parser
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if l, ok := p.Parse(sc.Text()); ok && Dovecot(l.Program) {
				cases = append(cases, [2]string{l.Program, l.Message})
			}
		}
	}
	for _, c := range cases {
		checkDovecotSame(t, c[0], c[1])
	}
	t.Logf("%d lines", len(cases))
}

func checkDovecotSame(t *testing.T, program, msg string) {
	t.Helper()
	want, wantOK := refParseDovecot(program, msg)
	got, ok := parseDovecot(program, msg)
	if ok != wantOK || !reflect.DeepEqual(got, want) {
		t.Fatalf("parseDovecot(%q, %q) = %+v, %v; the reference gives %+v, %v", program, msg, got, ok, want, wantOK)
	}
}

func FuzzDovecotSameAsReference(f *testing.F) {
	for _, c := range dovecotCorpus() {
		f.Add(c[0], c[1])
	}
	f.Fuzz(checkDovecotSame)
}

// FuzzDottedQuad: the address logline.DottedQuad reads at the start of s is what
// netip.ParseAddr reads there, and it reads every dotted quad netip does.
func FuzzDottedQuad(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "255.255.255.255", "01.2.3.4", "256.0.0.1", "1.2.3", "::1", "0.0.0.0", "1.2.3.4, lip", "1.2.3.45)", "1.2.3.4.5", "1.2.3.0004",
		"192.168.100.200", "1.2.3.4567890123456", "10.0.0.1,<abcdefgh>", "1.2.3.4.5.6.7.8.9", "1.22.3.0x", "0.0.0.00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// s alone, and with text after it as in Dovecot's lines
		for _, x := range []string{s, s + ", lip=192.0.2.10, TLS", s + "0123456789abcdef", s + ".0123456789abcdef"} {
			got, n, ok := logline.DottedQuad(x)
			if wi, wn, wok := refDottedQuad(x); got != wi || n != wn || ok != wok {
				t.Fatalf("logline.DottedQuad(%q) = %v, %d, %v; the old one %v, %d, %v", x, got, n, ok, wi, wn, wok)
			}
			if ok {
				if want, err := netip.ParseAddr(x[:n]); err != nil || got != want {
					t.Fatalf("logline.DottedQuad(%q) = %v, %d; netip.ParseAddr(%q) gives %v, %v", x, got, n, x[:n], want, err)
				}
				if n < len(x) && (x[n] == '.' || x[n] >= '0' && x[n] <= '9') {
					t.Fatalf("logline.DottedQuad(%q) stopped at %d, inside a longer address", x, n)
				}
			}
			want, err := netip.ParseAddr(s)
			if err == nil && want.Is4() && (x == s || x[len(s)] == ',') && (!ok || n != len(s) || got != want) {
				t.Fatalf("logline.DottedQuad(%q) = %v, %d, %v; netip.ParseAddr reads %v in %q", x, got, n, ok, want, s)
			}
		}
	})
}

// TestDovecotSearches: indexBy, lastIndexBy and lastByte are strings.Index,
// strings.LastIndex and strings.LastIndexByte, whichever byte of the key
// they search by, on keys that overlap themselves, at every length around
// the eight-byte words and with the key at either end.
func TestDovecotSearches(t *testing.T) {
	hays := []string{"", "a", "): ", "a): b): c", "aaaa", "abab", "x rip=1 rip=2", "rip= rip= rip=", " rip=", "user=<user=<",
		"Disconnected (auth failed, 2 attempts in 4 secs): user=<w>, method=PLAIN, rip=1.2.3.4, lip=5.6.7.8, TLS, session=<s>",
		"passwd-file(a,b): c,1.2.3.4,<s>): unknown user (given password: x): y"}
	for n := range 40 {
		hays = append(hays, strings.Repeat("=", n), strings.Repeat("x", n)+" rip=", " rip="+strings.Repeat("x", n), strings.Repeat("): x", n))
	}
	keys := []string{": ", "): ", " rip=", "user=<", "session=<", "method=", "(", "aa", "aba", "=", " (given password: ", "x"}
	for _, h := range hays {
		for _, key := range keys {
			checkSearches(t, h, key)
		}
	}
}

func checkSearches(t *testing.T, h, key string) {
	t.Helper()
	for k := range len(key) {
		if got, want := indexBy(h, key, k), strings.Index(h, key); got != want {
			t.Fatalf("indexBy(%q, %q, %d) = %d, want %d", h, key, k, got, want)
		}
		if got, want := lastIndexBy(h, key, k), strings.LastIndex(h, key); got != want {
			t.Fatalf("lastIndexBy(%q, %q, %d) = %d, want %d", h, key, k, got, want)
		}
	}
	if got, want := lastByte(h, key[0]), strings.LastIndexByte(h, key[0]); got != want {
		t.Fatalf("lastByte(%q, %q) = %d, want %d", h, key[0], got, want)
	}
	if got, want := field(h, key, '>'), refField(h, key, '>'); got != want {
		t.Fatalf("field(%q, %q) = %q, want %q", h, key, got, want)
	}
}

func FuzzDovecotSearches(f *testing.F) {
	f.Add("x rip=1 rip=2, lip=3", " rip=")
	f.Add("a): b): c", "): ")
	f.Fuzz(func(t *testing.T, h, key string) {
		if key != "" && len(key) <= 32 {
			checkSearches(t, h, key)
		}
	})
}

// refDottedQuad is logline.DottedQuad as it was before session 8 (a call of
// refQuadField per field): FuzzDottedQuad holds logline.DottedQuad to it.
func refDottedQuad(s string) (ip netip.Addr, n int, ok bool) {
	var b [4]byte
	i := 0
	for f := range 4 {
		if f > 0 {
			if i >= len(s) || s[i] != '.' {
				return ip, 0, false
			}
			i++
		}
		v, j := refQuadField(s, i)
		if j < 0 {
			return ip, 0, false
		}
		b[f], i = byte(v), j
	}
	if i < len(s) && (s[i]-'0' <= 9 || s[i] == '.') { // a longer field, or more of them
		return ip, 0, false
	}
	return netip.AddrFrom4(b), i, true
}

// refQuadField reads the field of a dotted quad at s[i:]: one to three
// digits, no leading zero (a field starting with 0 is "0"), at most 255.
// It returns the field and the index after it, or j -1.
func refQuadField(s string, i int) (v uint, j int) {
	if i >= len(s) {
		return 0, -1
	}
	v = uint(s[i] - '0')
	switch {
	case v > 9:
		return 0, -1
	case v == 0 || i+1 >= len(s):
		return v, i + 1
	}
	d := uint(s[i+1] - '0')
	if d > 9 {
		return v, i + 1
	}
	v = v*10 + d
	if i+2 >= len(s) {
		return v, i + 2
	}
	if d = uint(s[i+2] - '0'); d > 9 {
		return v, i + 2
	}
	if v = v*10 + d; v > 255 {
		return 0, -1
	}
	return v, i + 3
}

// TestDottedQuadSame holds logline.DottedQuad to the old one on every string of
// up to 9 bytes over digits, '.', and one other byte, and on addresses
// with every field from 0 to 299 cut at every length.
func TestDottedQuadSame(t *testing.T) {
	check := func(s string) {
		gi, gn, gok := logline.DottedQuad(s)
		wi, wn, wok := refDottedQuad(s)
		if gi != wi || gn != wn || gok != wok {
			t.Fatalf("logline.DottedQuad(%q) = %v, %d, %v; the old one %v, %d, %v", s, gi, gn, gok, wi, wn, wok)
		}
	}
	alphabet := "0129.x"
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		check(prefix)
		if n == 0 {
			return
		}
		for k := 0; k < len(alphabet); k++ {
			gen(prefix+alphabet[k:k+1], n-1)
		}
	}
	gen("", 7)
	for v := range 300 {
		for _, s := range []string{fmt.Sprintf("%d.1.2.3", v), fmt.Sprintf("1.%d.2.3", v), fmt.Sprintf("1.2.%d.3", v), fmt.Sprintf("1.2.3.%d", v),
			fmt.Sprintf("%d.%d.%d.%d, lip", v, v, v, v), fmt.Sprintf("0%d.1.2.3", v), fmt.Sprintf("1.2.3.%d0", v)} {
			for n := range len(s) + 1 {
				check(s[:n])
			}
		}
	}
}

// TestLoginFieldsUsual: where loginFieldsUsual reads a login message it
// gives dovecotLoginFields's four fields, on the corpus's login messages
// and on users holding what it looks for; and it reads the usual lines.
func TestLoginFieldsUsual(t *testing.T) {
	for _, m := range []string{
		"Login: user=<bob>, method=PLAIN, rip=67.171.251.222, lip=192.0.2.10, mpid=17173, TLS, session=<e8693916>",
		"Disconnected (auth failed, 2 attempts in 4 secs): user=<webmaster>, method=PLAIN, rip=49.225.54.169, lip=192.0.2.10, TLS, session=<a308f1de>",
	} {
		if _, _, _, _, ok := loginFieldsUsual(m); !ok {
			t.Errorf("loginFieldsUsual(%q) does not read it", m)
		}
		checkLoginFields(t, m)
	}
	for _, c := range dovecotCorpus() {
		if _, m, ok := strings.Cut(c[1], "-login: "); ok {
			checkLoginFields(t, m)
		}
	}
	for _, u := range []string{"", "a>b", "a>, method=X, rip=6.6.6.6", "a, rip=6.6.6.6, session=<x>", "user=<a>", "a=b", ">", "a>>", "r", "x rip=y"} {
		for _, m := range []string{"PLAIN", "", "P>", "P rip=1.1.1.1", "a>b"} {
			for _, tail := range []string{"1.2.3.4, lip=5.6.7.8, TLS, session=<s>", "1.2.3.4, secured", "1.2.3.4 rip=5.6.7.8", "", "1.2.3.4, session=<r>", "1.2.3.4, x=y"} {
				for _, head := range []string{"Login: ", "Disconnected (auth failed, 1 attempts in 2 secs): ", "Disconnected (x=y): ", "Login:  ", "x user=", ""} {
					checkLoginFields(t, head+"user=<"+u+">, method="+m+", rip="+tail)
					checkLoginFields(t, head+"user=<"+u+">, method="+m+" rip="+tail)
				}
			}
		}
	}
}

func checkLoginFields(t *testing.T, msg string) {
	t.Helper()
	h, u, m, tl, ok := loginFieldsUsual(msg)
	if !ok {
		return
	}
	if wh, wu, wm, wt := dovecotLoginFields(msg); h != wh || u != wu || m != wm || tl != wt {
		t.Fatalf("loginFieldsUsual(%q) = %q, %q, %q, %q; dovecotLoginFields gives %q, %q, %q, %q", msg, h, u, m, tl, wh, wu, wm, wt)
	}
}

func FuzzLoginFieldsUsual(f *testing.F) {
	f.Add("Login: user=<bob>, method=PLAIN, rip=67.171.251.222, lip=192.0.2.10, mpid=17173, TLS, session=<e8693916>")
	f.Add("Disconnected (auth failed, 2 attempts in 4 secs): user=<a>b>, method=PLAIN, rip=1.2.3.4, lip=192.0.2.10, TLS, session=<a308f1de>")
	f.Fuzz(checkLoginFields)
}
