package userdb

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayguard/relayguard/internal/store"
)

func openTest(t *testing.T, opts Options) (*DB, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	sqldb, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sqldb.Close() })
	db, err := Open(ctx, sqldb, opts)
	if err != nil {
		t.Fatal(err)
	}
	return db, sqldb
}

// TestOpenStartsNothing: Open, which every `relayguard user` command calls,
// starts no goroutine (constructors start nothing: docs/ARCHITECTURE.md,
// "Goroutines and shutdown"); serve makes the decoy hash with Prepare
// before it accepts. Found by review: Open hashed a random password in a
// goroutine that nobody owned or waited for.
func TestOpenStartsNothing(t *testing.T) {
	ctx := context.Background()
	sqldb, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sqldb.Close()
	before := runtime.NumGoroutine()
	db, err := Open(ctx, sqldb, Options{PasswordHash: Argon2id})
	if err != nil {
		t.Fatal(err)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("Open started %d goroutine(s)", n-before)
	}
	if db.dummyHash != "" {
		t.Error("Open made the decoy hash: it is Prepare's work")
	}
	db.Prepare()
	if !strings.HasPrefix(db.dummyHash, "$argon2id$") {
		t.Errorf("Prepare made decoy hash %q, want an argon2id hash", db.dummyHash)
	}
}

func mustAdd(t *testing.T, db *DB, user, pw string) {
	t.Helper()
	if err := db.Add(context.Background(), user, pw); err != nil {
		t.Fatalf("Add(%q): %v", user, err)
	}
}

func TestNormalizeName(t *testing.T) {
	good := []struct{ in, want string }{
		{"alice", "alice"},
		{"  Alice  ", "Alice"},
		{"Alice@Example.COM", "Alice@example.com"},
		{"bob@example.com.", "bob@example.com"},
		{"carl@Bücher.DE", "carl@xn--bcher-kva.de"},
		{"ü-user", "ü-user"},
		{"a%b!c", "a%b!c"},
	}
	for _, c := range good {
		got, err := NormalizeName(c.in)
		if err != nil || got != c.want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	bad := []struct{ in, why string }{
		{"", "empty"},
		{"   ", "empty"},
		{"a b", "white space"},
		{"a\tb", "white space"},
		{"a\u00a0b", "white space"},
		{"a\x00b", "control"},
		{"a\x7fb", "control"},
		{"a\x1bb", "control"},
		{"\xff\xfe", "UTF-8"},
		{strings.Repeat("x", 256), "longer than 255"},
		{"alice@", "domain"},
		{"@example.com", "empty local part"},
		{"a@b@example.com", "more than one @"},
		{"a@exa_mple..com", "domain"},
		{strings.Repeat("l", 65) + "@example.com", "local part longer"},
	}
	for _, c := range bad {
		_, err := NormalizeName(c.in)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("NormalizeName(%q) error = %v; want ErrInvalid mentioning %q", c.in, err, c.why)
			continue
		}
		if len(c.in) < 100 && !strings.Contains(err.Error(), fmt.Sprintf("%q", c.in)) {
			t.Errorf("NormalizeName(%q) error %q does not name the input", c.in, err)
		}
	}
	if _, err := NormalizeAddress("alice"); err == nil || !strings.Contains(err.Error(), `"alice"`) {
		t.Errorf("NormalizeAddress(alice) = %v, want an error naming it", err)
	}
}

func TestAccountLifecycle(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	mustAdd(t, db, "alice", "pw-one")
	if err := db.Add(ctx, "ALICE", "x"); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "ALICE") {
		t.Fatalf("Add duplicate (case variant) = %v, want ErrExists naming it", err)
	}
	if err := db.Add(ctx, "empty", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Add with empty password = %v, want ErrInvalid", err)
	}
	mustAdd(t, db, "Bob@Example.ORG", "pw-two")

	if id, ok, err := db.CheckPassword(ctx, "alice", "pw-one"); err != nil || !ok || id != "alice" {
		t.Fatalf("CheckPassword(alice) = %q %v %v", id, ok, err)
	}
	// Case-insensitive account match, canonical identity returned.
	if id, ok, _ := db.CheckPassword(ctx, "bob@EXAMPLE.org", "pw-two"); !ok || id != "Bob@example.org" {
		t.Fatalf("CheckPassword(bob@EXAMPLE.org) = %q %v", id, ok)
	}
	if _, ok, _ := db.CheckPassword(ctx, "alice", "pw-two"); ok {
		t.Fatal("wrong password accepted")
	}

	if err := db.SetPassword(ctx, "Alice", "pw-new"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := db.CheckPassword(ctx, "alice", "pw-one"); ok {
		t.Fatal("old password still accepted after SetPassword")
	}
	if _, ok, _ := db.CheckPassword(ctx, "alice", "pw-new"); !ok {
		t.Fatal("new password refused after SetPassword")
	}
	if err := db.SetPassword(ctx, "nobody", "x"); !errors.Is(err, ErrNoSuchUser) || !strings.Contains(err.Error(), "nobody") {
		t.Fatalf("SetPassword(nobody) = %v", err)
	}

	if err := db.AddAddress(ctx, "alice", "Info@Example.COM"); err != nil {
		t.Fatal(err)
	}
	if err := db.AddAddress(ctx, "alice", "info@example.com"); !errors.Is(err, ErrExists) {
		t.Fatalf("AddAddress twice = %v, want ErrExists", err)
	}
	if err := db.AddAddress(ctx, "nobody", "x@example.com"); !errors.Is(err, ErrNoSuchUser) {
		t.Fatalf("AddAddress(nobody) = %v, want ErrNoSuchUser", err)
	}
	if err := db.AddAddress(ctx, "alice", "not-an-address"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("AddAddress(bad) = %v, want ErrInvalid", err)
	}
	if err := db.AddAddress(ctx, "alice", "sales@example.com"); err != nil {
		t.Fatal(err)
	}
	addrs, err := db.Addresses(ctx, "alice")
	if err != nil || strings.Join(addrs, " ") != "Info@example.com sales@example.com" {
		t.Fatalf("Addresses = %q, %v", addrs, err)
	}
	if err := db.DelAddress(ctx, "alice", "SALES@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := db.DelAddress(ctx, "alice", "sales@example.com"); !errors.Is(err, ErrNoSuchAddress) {
		t.Fatalf("DelAddress twice = %v, want ErrNoSuchAddress", err)
	}

	if err := db.Suspend(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	list, err := db.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if list[0].Name != "Bob@example.org" || list[1].Name != "alice" || !list[1].Suspended || list[0].Suspended ||
		strings.Join(list[1].Addresses, ",") != "Info@example.com" || len(list[0].Addresses) != 0 || list[1].Created.IsZero() {
		t.Fatalf("List = %+v", list)
	}
	if _, ok, _ := db.CheckPassword(ctx, "alice", "pw-new"); ok {
		t.Fatal("suspended account authenticated")
	}
	if err := db.Unsuspend(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := db.CheckPassword(ctx, "alice", "pw-new"); !ok {
		t.Fatal("unsuspended account refused")
	}

	if err := db.Delete(ctx, "ALICE"); err != nil {
		t.Fatal(err)
	}
	if err := db.Delete(ctx, "alice"); !errors.Is(err, ErrNoSuchUser) {
		t.Fatalf("Delete twice = %v, want ErrNoSuchUser", err)
	}
	// Addresses went with the account.
	mustAdd(t, db, "alice", "again")
	if addrs, _ := db.Addresses(ctx, "alice"); len(addrs) != 0 {
		t.Fatalf("re-created account inherited addresses %q", addrs)
	}
	if ok, _ := db.LocalRecipientExists(ctx, "info", "example.com"); ok {
		t.Fatal("deleted account's address still a recipient")
	}
}

func TestPasswordRules(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{PasswordHash: Bcrypt})
	for _, c := range []struct{ pw, why string }{
		{"", "empty"},
		{"a\x00b", "NUL"},
		{strings.Repeat("p", MaxPasswordLen+1), "longer than"},
		{"\xff", "UTF-8"},
		{strings.Repeat("p", 73), "72 bytes"},
	} {
		err := db.Add(ctx, "u", c.pw)
		if err == nil || !strings.Contains(err.Error(), c.why) {
			t.Errorf("Add with password %.10q... = %v, want error about %q", c.pw, err, c.why)
		}
	}
}

func TestOpenOptions(t *testing.T) {
	ctx := context.Background()
	sqldb, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sqldb.Close()
	if _, err := Open(ctx, sqldb, Options{PasswordHash: "md5"}); err == nil || !strings.Contains(err.Error(), `"md5"`) {
		t.Errorf("Open(md5) = %v", err)
	}
	if _, err := Open(ctx, sqldb, Options{SCRAMIterations: 1000}); err == nil || !strings.Contains(err.Error(), "1000") {
		t.Errorf("Open(1000 iterations) = %v", err)
	}
}

// TestStoredFormats checks what is written to the database: a PHC argon2id
// string or a bcrypt hash with our parameters, and SCRAM keys recomputed
// here from RFC 5802 §3 with the standard library alone.
func TestStoredFormats(t *testing.T) {
	ctx := context.Background()
	for _, scheme := range []string{Argon2id, Bcrypt} {
		t.Run(scheme, func(t *testing.T) {
			db, sqldb := openTest(t, Options{PasswordHash: scheme, SCRAMIterations: 5000})
			const pw = "Tr0ub4dor&3"
			mustAdd(t, db, "alice", pw)
			var hash string
			var salt, stored, server, cram []byte
			var iters int
			err := sqldb.QueryRowContext(ctx, `SELECT password_hash, scram_salt, scram_iterations, scram_stored_key, scram_server_key, cram_secret
				FROM userdb_accounts WHERE name = 'alice'`).Scan(&hash, &salt, &iters, &stored, &server, &cram)
			if err != nil {
				t.Fatal(err)
			}
			switch scheme {
			case Argon2id:
				h, err := parseArgon2id(hash)
				if err != nil {
					t.Fatalf("stored hash %q does not parse: %v", hash, err)
				}
				if !strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$") || len(h.salt) != 16 || len(h.key) != 32 {
					t.Fatalf("argon2id hash %q has unexpected parameters", hash)
				}
			case Bcrypt:
				cost, err := bcrypt.Cost([]byte(hash))
				if err != nil || cost != bcryptCost || bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) != nil {
					t.Fatalf("bcrypt hash %q: cost %d, %v", hash, cost, err)
				}
			}
			if cram != nil {
				t.Fatal("CRAM-MD5 secret stored with CRAM-MD5 disabled")
			}
			if len(salt) != 16 || iters != 5000 {
				t.Fatalf("SCRAM salt %d bytes, %d iterations", len(salt), iters)
			}
			salted, err := pbkdf2.Key(sha256.New, pw, salt, iters, 32)
			if err != nil {
				t.Fatal(err)
			}
			clientKey := hmacSHA256(salted, "Client Key")
			wantStored := sha256.Sum256(clientKey)
			if !hmac.Equal(stored, wantStored[:]) || !hmac.Equal(server, hmacSHA256(salted, "Server Key")) {
				t.Fatal("stored SCRAM keys differ from RFC 5802 §3 StoredKey/ServerKey")
			}
		})
	}
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// TestReferenceHashes verifies hashes made by other implementations: the
// argon2 reference CLI (Debian package argon2) and Apache's htpasswd
// (apache2-utils, bcrypt $2y$).
func TestReferenceHashes(t *testing.T) {
	need := func(bin string) {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed", bin)
			}
			t.Skipf("%s not installed", bin)
		}
	}
	need("argon2")
	need("htpasswd")
	const pw = "correct horse battery staple"
	cmd := exec.Command("argon2", "relayguardsalt", "-id", "-t", "2", "-k", "1024", "-p", "2", "-e")
	cmd.Stdin = strings.NewReader(pw)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	argonHash := strings.TrimSpace(string(out))
	out, err = exec.Command("htpasswd", "-nbB", "-C", "5", "u", pw).Output()
	if err != nil {
		t.Fatal(err)
	}
	_, bcryptHash, _ := strings.Cut(strings.TrimSpace(string(out)), ":")
	for _, h := range []string{argonHash, bcryptHash} {
		if ok, err := verifyHash(h, []byte(pw)); !ok || err != nil {
			t.Errorf("verifyHash(%q, right password) = %v, %v", h, ok, err)
		}
		if ok, err := verifyHash(h, []byte(pw+"!")); ok || err != nil {
			t.Errorf("verifyHash(%q, wrong password) = %v, %v", h, ok, err)
		}
	}
}

func TestParseArgon2idRejects(t *testing.T) {
	for _, h := range []string{
		"",
		"$argon2i$v=19$m=1024,t=2,p=1$c29tZXNhbHQ$lLjaKRWGBv7St+T3ktAqRh8rIcKpp41ZY/hSzkzM9cA",
		"$argon2id$v=16$m=1024,t=2,p=1$c29tZXNhbHQ$lLjaKRWGBv7St+T3ktAqRh8rIcKpp41ZY/hSzkzM9cA",
		"$argon2id$v=19$m=1024,t=2$c29tZXNhbHQ$lLjaKRWGBv7St+T3ktAqRh8rIcKpp41ZY/hSzkzM9cA",
		"$argon2id$v=19$m=99999999,t=2,p=1$c29tZXNhbHQ$lLjaKRWGBv7St+T3ktAqRh8rIcKpp41ZY/hSzkzM9cA",
		"$argon2id$v=19$m=1024,t=2,p=1,x=3$c29tZXNhbHQ$lLjaKRWGBv7St+T3ktAqRh8rIcKpp41ZY/hSzkzM9cA",
		"$argon2id$v=19$m=1024,t=2,p=1$!!!$lLjaKRWGBv7St+T3ktAqRh8rIcKpp41ZY/hSzkzM9cA",
		"$argon2id$v=19$m=1024,t=2,p=1$c29tZXNhbHQ$",
	} {
		if _, err := parseArgon2id(h); err == nil {
			t.Errorf("parseArgon2id(%q) accepted", h)
		}
	}
}

// TestUnknownUserCostsTheSame checks that every failure path of
// CheckPassword runs exactly one hash verification of the configured
// scheme: unknown, invalid and suspended names cost what a wrong password
// costs. (Counting, not timing: no timed assertions.)
func TestUnknownUserCostsTheSame(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var calls []string
	verifyHook = func(s string) { mu.Lock(); calls = append(calls, s); mu.Unlock() }
	t.Cleanup(func() { verifyHook = nil })
	for _, scheme := range []string{Argon2id, Bcrypt} {
		db, _ := openTest(t, Options{PasswordHash: scheme})
		mustAdd(t, db, "alice", "right")
		mustAdd(t, db, "sam", "right")
		if err := db.Suspend(ctx, "sam"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			user, pw string
			ok       bool
		}{
			{"alice", "right", true},
			{"alice", "wrong", false},
			{"nobody", "wrong", false},
			{"nobody", "right", false},
			{"not a name", "right", false},
			{"", "", false},
			{"sam", "right", false},
		} {
			mu.Lock()
			calls = nil
			mu.Unlock()
			_, ok, err := db.CheckPassword(ctx, c.user, c.pw)
			mu.Lock()
			got := append([]string(nil), calls...)
			mu.Unlock()
			if err != nil || ok != c.ok || len(got) != 1 || got[0] != scheme {
				t.Errorf("%s: CheckPassword(%q, %q) = %v, %v with verifications %q; want %v with exactly one %s verification",
					scheme, c.user, c.pw, ok, err, got, c.ok, scheme)
			}
		}
	}
}

func TestLocalRecipientExists(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	mustAdd(t, db, "alice", "x")
	mustAdd(t, db, "bob@example.com", "x")
	mustAdd(t, db, "carol", "x")
	if err := db.AddAddress(ctx, "carol", "sales@example.net"); err != nil {
		t.Fatal(err)
	}
	if err := db.Suspend(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		local, domain string
		want          bool
	}{
		{"alice", "example.com", true},  // bare name: every local domain
		{"alice", "example.net", true},  // ... suspended accounts still receive
		{"ALICE", "example.com", true},  // ASCII case-insensitive
		{"bob", "example.com", true},    // address-form name
		{"Bob", "EXAMPLE.COM.", true},   // domain canonicalised
		{"bob", "example.net", false},   // address-form name is one domain only
		{"sales", "example.net", true},  // owned address
		{"sales", "Example.Net", true},  //
		{"sales", "example.com", false}, // owned address is one domain only
		{"carol", "example.org", true},
		{"dave", "example.com", false},
		{"alice%remote.example", "example.com", false}, // percent hack is just a local part
		{"remote!alice", "example.com", false},         // bang path too
		{"bob@example.com", "example.com", false},      // quoted local part with @
		{"", "example.com", false},
	} {
		got, err := db.LocalRecipientExists(ctx, c.local, c.domain)
		if err != nil || got != c.want {
			t.Errorf("LocalRecipientExists(%q, %q) = %v, %v; want %v", c.local, c.domain, got, err, c.want)
		}
	}
}

func TestMayUseSender(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t, Options{})
	mustAdd(t, db, "alice", "x")
	mustAdd(t, db, "bob@example.com", "x")
	for _, a := range [][2]string{{"alice", "info@example.org"}, {"bob@example.com", "bob.smith@example.net"}} {
		if err := db.AddAddress(ctx, a[0], a[1]); err != nil {
			t.Fatal(err)
		}
	}
	local := []string{"example.com", "mail.example.com"} // canonical, as config.Site gives them
	for _, c := range []struct {
		user, addr string
		want       bool
	}{
		{"alice", "alice@example.com", true},
		{"alice", "Alice@mail.example.com", true},
		{"ALICE", "alice@EXAMPLE.com", true},
		{"alice", "alice@example.net", false}, // not a local domain
		{"alice", "info@example.org", true},   // owned address
		{"alice", "INFO@example.org.", true},
		{"alice", "bob@example.com", false},
		{"alice", "alice", false},
		{"alice", "", false},
		{"bob@example.com", "bob@example.com", true},
		{"bob@example.com", "bob@mail.example.com", false}, // address-form names are exact
		{"bob@example.com", "bob.smith@example.net", true},
		{"bob@example.com", "alice@example.com", false},
		{"nobody", "nobody@example.com", false},
		{"not valid", "x@example.com", false},
	} {
		got, err := db.MayUseSender(ctx, c.user, c.addr, local)
		if err != nil || got != c.want {
			t.Errorf("MayUseSender(%q, %q) = %v, %v; want %v", c.user, c.addr, got, err, c.want)
		}
	}
}

func TestCRAMSecretOnlyWhenEnabled(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sqldb, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer sqldb.Close()
	on, err := Open(ctx, sqldb, Options{CRAMMD5: true})
	if err != nil {
		t.Fatal(err)
	}
	off, err := Open(ctx, sqldb, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAdd(t, on, "alice", "pw")
	mustAdd(t, off, "bob", "pw")
	if a, _ := on.Get(ctx, "alice"); !a.HasCRAM {
		t.Fatal("CRAM-MD5 enabled but no secret stored")
	}
	if b, _ := on.Get(ctx, "bob"); b.HasCRAM {
		t.Fatal("CRAM-MD5 secret stored with CRAM-MD5 disabled")
	}
	if _, id, ok, err := on.LookupCRAM(ctx, "alice"); !ok || err != nil || id != "alice" {
		t.Fatalf("LookupCRAM(alice) with CRAM on = %v %v", ok, err)
	}
	if _, _, ok, _ := off.LookupCRAM(ctx, "alice"); ok {
		t.Fatal("LookupCRAM succeeded with CRAM-MD5 disabled")
	}
	// Changing the password with CRAM-MD5 off removes the secret.
	if err := off.SetPassword(ctx, "alice", "pw2"); err != nil {
		t.Fatal(err)
	}
	if a, _ := on.Get(ctx, "alice"); a.HasCRAM {
		t.Fatal("CRAM-MD5 secret kept after passwd with CRAM-MD5 disabled")
	}
}

// TestDecoys checks the SCRAM answer for unknown users: deterministic per
// name (and its case variants), persistent across Open, different across
// names, and shaped like a real account's.
func TestDecoys(t *testing.T) {
	ctx := context.Background()
	sqldb, err := store.OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sqldb.Close()
	db1, err := Open(ctx, sqldb, Options{})
	if err != nil {
		t.Fatal(err)
	}
	db2, err := Open(ctx, sqldb, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAdd(t, db1, "alice", "pw")
	real, id, ok, err := db1.LookupSCRAM(ctx, "ALICE")
	if err != nil || !ok || id != "alice" {
		t.Fatalf("LookupSCRAM(ALICE) = %v %q %v", ok, id, err)
	}
	d1, id, ok, err := db1.LookupSCRAM(ctx, "mallory")
	if err != nil || ok || id != "" {
		t.Fatalf("LookupSCRAM(mallory) = %v %q %v", ok, id, err)
	}
	d2, _, _, _ := db2.LookupSCRAM(ctx, "Mallory")
	d3, _, _, _ := db1.LookupSCRAM(ctx, "trent")
	if d1.Salt != d2.Salt || d1.Iters != d2.Iters {
		t.Fatal("decoy salt differs between opens or case variants")
	}
	if d1.Salt == d3.Salt {
		t.Fatal("two unknown users got the same decoy salt")
	}
	if len(d1.Salt) != len(real.Salt) || d1.Iters != real.Iters || len(d1.StoredKey) != len(real.StoredKey) {
		t.Fatal("decoy is shaped differently from a real account")
	}
	other, err := Open(ctx, sqldb, Options{Secret: []byte("explicit")})
	if err != nil {
		t.Fatal(err)
	}
	if d4, _, _, _ := other.LookupSCRAM(ctx, "mallory"); d4.Salt == d1.Salt {
		t.Fatal("explicit Secret ignored")
	}
}
