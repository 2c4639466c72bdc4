package sasl_test

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/xdg-go/scram"

	"github.com/relayguard/relayguard/internal/sasl"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

const (
	alicePW = "correct horse battery staple"
	samPW   = "sam's password"
	// uniPW has a soft hyphen (SASLprep maps it to nothing) and a
	// no-break space (mapped to a space): RFC 4013.
	uniPW = "p\u00e4ss\u00adw\u00f6rd\u00a0x"
)

// testDB is a real account database on a temporary SQLite file: alice
// (with addresses and a CRAM-MD5 secret), "bob@example.com", and sam who is
// suspended.
func testDB(t *testing.T) *userdb.DB {
	t.Helper()
	ctx := context.Background()
	sqldb, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sqldb.Close() })
	db, err := userdb.Open(ctx, sqldb, userdb.Options{CRAMMD5: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range [][2]string{{"alice", alicePW}, {"bob@example.com", "bobpw"}, {"sam", samPW}, {"uni", uniPW}} {
		if err := db.Add(ctx, u[0], u[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Suspend(ctx, "sam"); err != nil {
		t.Fatal(err)
	}
	return db
}

// step drives a Server with a scripted list of responses and returns the
// challenges seen, the final error, and whether it finished.
func run(t *testing.T, srv sasl.Server, responses ...[]byte) (challenges []string, done bool, err error) {
	t.Helper()
	ctx := context.Background()
	for i, r := range responses {
		ch, d, e := srv.Next(ctx, r)
		challenges = append(challenges, string(ch))
		if d || e != nil {
			if e != nil && !d {
				t.Fatalf("Next returned error %v without done", e)
			}
			if i != len(responses)-1 {
				t.Fatalf("exchange ended after %d of %d responses: %v", i+1, len(responses), e)
			}
			return challenges, d, e
		}
	}
	return challenges, false, nil
}

func newServer(t *testing.T, mech string, db sasl.Credentials, opt sasl.Options) sasl.Server {
	t.Helper()
	s, err := sasl.New(mech, db, opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func plain(authz, authc, pw string) []byte { return []byte(authz + "\x00" + authc + "\x00" + pw) }

func TestPlain(t *testing.T) {
	db := testDB(t)
	for _, c := range []struct {
		name      string
		resp      [][]byte
		err       error
		identity  string
		attempted string
	}{
		{"initial response", [][]byte{plain("", "alice", alicePW)}, nil, "alice", "alice"},
		{"after empty challenge", [][]byte{nil, plain("", "alice", alicePW)}, nil, "alice", "alice"},
		{"SASLprep of the password", [][]byte{plain("", "uni", uniPW)}, nil, "uni", "uni"},
		{"SASLprep-equivalent password", [][]byte{plain("", "uni", "p\u00e4ssw\u00f6rd x")}, nil, "uni", "uni"},
		{"authzid equal to authcid", [][]byte{plain("alice", "alice", alicePW)}, nil, "alice", "alice"},
		{"case variant, canonical identity", [][]byte{plain("", "Bob@EXAMPLE.com", "bobpw")}, nil, "bob@example.com", "Bob@EXAMPLE.com"},
		{"authzid of someone else", [][]byte{plain("bob@example.com", "alice", alicePW)}, sasl.ErrAuthFailed, "", "alice"},
		{"wrong password", [][]byte{plain("", "alice", "guess")}, sasl.ErrAuthFailed, "", "alice"},
		{"unknown user", [][]byte{plain("", "mallory", "guess")}, sasl.ErrAuthFailed, "", "mallory"},
		{"suspended user", [][]byte{plain("", "sam", samPW)}, sasl.ErrAuthFailed, "", "sam"},
		{"no NUL", [][]byte{[]byte("alice" + alicePW)}, sasl.ErrMalformed, "", ""},
		{"one NUL", [][]byte{[]byte("alice\x00" + alicePW)}, sasl.ErrMalformed, "", ""},
		{"three NULs", [][]byte{[]byte("\x00alice\x00pw\x00")}, sasl.ErrMalformed, "", ""},
		{"empty authcid", [][]byte{plain("", "", alicePW)}, sasl.ErrMalformed, "", ""},
		{"empty password", [][]byte{plain("", "alice", "")}, sasl.ErrMalformed, "", ""},
		{"empty response", [][]byte{{}}, sasl.ErrMalformed, "", ""},
		{"not UTF-8", [][]byte{plain("", "alice\xff", alicePW)}, sasl.ErrMalformed, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := newServer(t, "plain", db, sasl.Options{})
			ch, done, err := run(t, srv, c.resp...)
			if !done || !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
				t.Fatalf("done=%v err=%v, want err %v", done, err, c.err)
			}
			if srv.Identity() != c.identity || srv.Attempted() != c.attempted {
				t.Fatalf("Identity()=%q Attempted()=%q, want %q %q", srv.Identity(), srv.Attempted(), c.identity, c.attempted)
			}
			if len(c.resp) == 2 && ch[0] != "" {
				t.Fatalf("challenge without initial response = %q, want empty", ch[0])
			}
			if err != nil && strings.Contains(err.Error(), alicePW) {
				t.Fatalf("error %q contains the password", err)
			}
		})
	}
}

func TestLogin(t *testing.T) {
	db := testDB(t)
	for _, c := range []struct {
		name string
		resp [][]byte
		err  error
		id   string
	}{
		{"prompted", [][]byte{nil, []byte("alice"), []byte(alicePW)}, nil, "alice"},
		{"user as initial response", [][]byte{[]byte("alice"), []byte(alicePW)}, nil, "alice"},
		{"wrong password", [][]byte{nil, []byte("alice"), []byte("nope")}, sasl.ErrAuthFailed, ""},
		{"unknown user", [][]byte{nil, []byte("mallory"), []byte("nope")}, sasl.ErrAuthFailed, ""},
		{"empty user", [][]byte{nil, {}, []byte("nope")}, sasl.ErrAuthFailed, ""},
		{"NUL in user", [][]byte{nil, []byte("al\x00ice")}, sasl.ErrMalformed, ""},
		{"bad UTF-8 password", [][]byte{nil, []byte("alice"), []byte("\xff")}, sasl.ErrMalformed, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := newServer(t, "LOGIN", db, sasl.Options{})
			ch, done, err := run(t, srv, c.resp...)
			if !done || !errors.Is(err, c.err) || (c.err == nil) != (err == nil) || srv.Identity() != c.id {
				t.Fatalf("done=%v err=%v id=%q, want err %v id %q", done, err, srv.Identity(), c.err, c.id)
			}
			want := []string{"Username:", "Password:", ""}
			if c.resp[0] != nil {
				want = want[1:]
			}
			if len(ch) == len(want) && !slices.Equal(ch, want) {
				t.Fatalf("challenges %q, want %q", ch, want)
			}
		})
	}
}

func cramResponse(user, pw string, challenge string) []byte {
	m := hmac.New(md5.New, []byte(pw))
	m.Write([]byte(challenge))
	return []byte(user + " " + hex.EncodeToString(m.Sum(nil)))
}

func TestCRAMMD5(t *testing.T) {
	db := testDB(t)
	challengeRE := regexp.MustCompile(`^<[0-9]+\.[0-9]+@mx\.example\.net>$`)
	for _, c := range []struct {
		name     string
		response func(ch string) []byte
		err      error
		id       string
	}{
		{"right", func(ch string) []byte { return cramResponse("alice", alicePW, ch) }, nil, "alice"},
		{"upper-case hex", func(ch string) []byte {
			u, d, _ := strings.Cut(string(cramResponse("alice", alicePW, ch)), " ")
			return []byte(u + " " + strings.ToUpper(d))
		}, nil, "alice"},
		{"wrong password", func(ch string) []byte { return cramResponse("alice", "guess", ch) }, sasl.ErrAuthFailed, ""},
		{"other challenge", func(ch string) []byte { return cramResponse("alice", alicePW, ch+"x") }, sasl.ErrAuthFailed, ""},
		{"unknown user", func(ch string) []byte { return cramResponse("mallory", "guess", ch) }, sasl.ErrAuthFailed, ""},
		{"user without secret", func(ch string) []byte { return cramResponse("carl", "carlpw", ch) }, sasl.ErrAuthFailed, ""},
		{"suspended", func(ch string) []byte { return cramResponse("sam", samPW, ch) }, sasl.ErrAuthFailed, ""},
		{"no digest", func(ch string) []byte { return []byte("alice") }, sasl.ErrMalformed, ""},
		{"short digest", func(ch string) []byte { return []byte("alice 0123abcd") }, sasl.ErrMalformed, ""},
		{"not hex", func(ch string) []byte { return []byte("alice " + strings.Repeat("zz", 16)) }, sasl.ErrMalformed, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := newServer(t, "CRAM-MD5", db, sasl.Options{Hostname: "mx.example.net"})
			ch, done, err := srv.Next(context.Background(), nil)
			if err != nil || done || !challengeRE.Match(ch) {
				t.Fatalf("challenge %q done=%v err=%v", ch, done, err)
			}
			_, done, err = srv.Next(context.Background(), c.response(string(ch)))
			if !done || !errors.Is(err, c.err) || (c.err == nil) != (err == nil) || srv.Identity() != c.id {
				t.Fatalf("done=%v err=%v id=%q, want err %v id %q", done, err, srv.Identity(), c.err, c.id)
			}
		})
	}
	// Two exchanges never share a challenge.
	a, _, _ := newServer(t, "CRAM-MD5", db, sasl.Options{}).Next(context.Background(), nil)
	b, _, _ := newServer(t, "CRAM-MD5", db, sasl.Options{}).Next(context.Background(), nil)
	if string(a) == string(b) {
		t.Fatalf("repeated challenge %q", a)
	}
	// RFC 4954 §4: an initial response to CRAM-MD5 is a 501.
	_, done, err := newServer(t, "CRAM-MD5", db, sasl.Options{}).Next(context.Background(), []byte("alice 00"))
	if !done || !errors.Is(err, sasl.ErrMalformed) {
		t.Fatalf("initial response: done=%v err=%v", done, err)
	}
}

// TestCRAMSecretMatchesHMAC checks the precomputed-state secret against
// crypto/hmac for keys shorter than, equal to and longer than the MD5
// block.
func TestCRAMSecretMatchesHMAC(t *testing.T) {
	for _, n := range []int{1, 20, 63, 64, 65, 200} {
		pw := strings.Repeat("k", n)
		db := &oneUser{name: "u", cram: sasl.CRAMMD5Secret([]byte(pw))}
		srv := newServer(t, "CRAM-MD5", db, sasl.Options{})
		ch, _, _ := srv.Next(context.Background(), nil)
		if _, _, err := srv.Next(context.Background(), cramResponse("u", pw, string(ch))); err != nil {
			t.Errorf("key of %d bytes: %v", n, err)
		}
	}
}

// oneUser is a minimal Credentials holding one CRAM-MD5 secret, for the
// HMAC cross-check above (no database needed to test the arithmetic).
type oneUser struct {
	name string
	cram []byte
}

func (o *oneUser) CRAMSecret(_ context.Context, u string) ([]byte, bool) { return o.cram, u == o.name }
func (o *oneUser) VerifyPassword(context.Context, string, string) (string, bool) {
	return "", false
}
func (o *oneUser) SCRAMCredentials(context.Context, string) (s scram.StoredCredentials, ok bool) {
	return s, false
}

func TestNewAndMechanisms(t *testing.T) {
	db := testDB(t)
	for _, m := range []string{"ANONYMOUS", "GSSAPI", "XOAUTH2", "", "PLAIN "} {
		if _, err := sasl.New(m, db, sasl.Options{}); !errors.Is(err, sasl.ErrUnknownMechanism) || !strings.Contains(err.Error(), fmt.Sprintf("%q", m)) {
			t.Errorf("New(%q) = %v, want ErrUnknownMechanism naming it", m, err)
		}
	}
	if _, err := sasl.New("SCRAM-SHA-256-PLUS", db, sasl.Options{}); !errors.Is(err, sasl.ErrUnknownMechanism) {
		t.Errorf("PLUS without TLS: %v", err)
	}
	conf := []string{"SCRAM-SHA-256-PLUS", "scram-sha-256", "PLAIN", "LOGIN", "CRAM-MD5", "ANONYMOUS", "PLAIN"}
	if got := sasl.Mechanisms(conf, sasl.Options{}, false); !slices.Equal(got, []string{"SCRAM-SHA-256", "CRAM-MD5"}) {
		t.Errorf("plaintext connection: %q", got)
	}
	if got := sasl.Mechanisms(conf, sasl.Options{}, true); !slices.Equal(got, []string{"SCRAM-SHA-256", "PLAIN", "LOGIN", "CRAM-MD5"}) {
		t.Errorf("trusted local plaintext: %q", got)
	}
	p := newTLSPair(t, 0)
	if got := sasl.Mechanisms(conf, p.serverOpts(), false); !slices.Equal(got, []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN", "CRAM-MD5"}) {
		t.Errorf("TLS: %q", got)
	}
}
