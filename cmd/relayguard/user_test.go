package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

type cliResult struct {
	stdout, stderr string
	code           int
}

func runCLI(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	bin, err := relayguardBinary()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	res := cliResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return res
}

func TestUserCommand(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("go tool not in PATH")
		}
		t.Skip("go tool not in PATH")
	}
	data := t.TempDir()
	dd := []string{"--data-dir", data}
	user := func(stdin string, args ...string) cliResult {
		t.Helper()
		return runCLI(t, stdin, append(dd, append([]string{"user"}, args...)...)...)
	}
	ok := func(r cliResult, wantOut string) {
		t.Helper()
		if r.code != 0 || !strings.Contains(r.stdout, wantOut) {
			t.Fatalf("exit %d, stdout %q, stderr %q; want success printing %q", r.code, r.stdout, r.stderr, wantOut)
		}
	}
	fails := func(r cliResult, wantErr string) {
		t.Helper()
		if r.code == 0 || !strings.Contains(r.stderr, wantErr) {
			t.Fatalf("exit %d, stderr %q; want failure mentioning %q", r.code, r.stderr, wantErr)
		}
	}
	listJSON := func() []userdb.Account {
		t.Helper()
		r := user("", "list", "--json")
		var accts []userdb.Account
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &accts) != nil {
			t.Fatalf("list --json: exit %d, %q %q", r.code, r.stdout, r.stderr)
		}
		return accts
	}
	// check opens the database the command wrote and verifies a password.
	check := func(name, pw string) bool {
		t.Helper()
		ctx := context.Background()
		sqldb, err := store.OpenSQLite(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		defer sqldb.Close()
		db, err := userdb.Open(ctx, sqldb, userdb.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, good, err := db.CheckPassword(ctx, name, pw)
		if err != nil {
			t.Fatal(err)
		}
		return good
	}

	ok(user("s3cret pass\n", "add", "alice@Example.COM", "--password-stdin"), "added account alice@example.com")
	if !check("alice@example.com", "s3cret pass") || check("alice@example.com", "s3cret pass\n") {
		t.Fatal("stored password is not the first line of stdin")
	}
	fails(user("x\n", "add", "ALICE@example.com", "--password-stdin"), "already exists")
	fails(user("", "add", "bob", "--password-stdin"), "empty password")
	fails(user("\n", "add", "bob", "--password-stdin"), "empty password")
	fails(user("x\n", "add", "a b", "--password-stdin"), `"a b"`)
	fails(user("x\n", "add", "carol"), "--password-stdin") // stdin is not a terminal
	fails(user("", "add"), "accepts 1 arg")

	ok(user("", "addr", "add", "alice@example.com", "Sales@EXAMPLE.com."), "may now send as Sales@example.com")
	fails(user("", "addr", "add", "alice@example.com", "sales@example.com"), "already exists")
	fails(user("", "addr", "add", "nobody", "x@example.com"), `"nobody": no such account`)
	fails(user("", "addr", "add", "alice@example.com", "no-at-sign"), `"no-at-sign"`)
	ok(user("", "addr", "list", "alice@example.com"), "Sales@example.com")

	accts := listJSON()
	if len(accts) != 1 || accts[0].Name != "alice@example.com" || strings.Join(accts[0].Addresses, ",") != "Sales@example.com" ||
		accts[0].HasCRAM || accts[0].Suspended || accts[0].Created.IsZero() {
		t.Fatalf("list --json = %+v", accts)
	}
	ok(user("", "list"), "alice@example.com")

	ok(user("n3w-pass\n", "passwd", "alice@example.com", "--password-stdin"), "password changed")
	if check("alice@example.com", "s3cret pass") || !check("alice@example.com", "n3w-pass") {
		t.Fatal("passwd did not replace the password")
	}
	fails(user("x\n", "passwd", "nobody", "--password-stdin"), "no such account")

	ok(user("", "suspend", "alice@example.com"), "suspended")
	if accts := listJSON(); !accts[0].Suspended {
		t.Fatal("suspend not shown by list")
	}
	if check("alice@example.com", "n3w-pass") {
		t.Fatal("suspended account authenticates")
	}
	ok(user("", "unsuspend", "alice@example.com"), "unsuspended")

	// With auth.cram_md5 on, a secret is stored and the warning printed.
	conf := filepath.Join(t.TempDir(), "relayguard.toml")
	if err := os.WriteFile(conf, []byte("[auth]\ncram_md5 = true\nmechanisms = [\"SCRAM-SHA-256\", \"PLAIN\", \"CRAM-MD5\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "dave-pw\n", "--config", conf, "--data-dir", data, "user", "add", "dave", "--password-stdin")
	ok(r, "added account dave")
	if !strings.Contains(r.stderr, "password-equivalent") {
		t.Fatalf("no CRAM-MD5 warning: %q", r.stderr)
	}
	if accts := listJSON(); len(accts) != 2 || accts[1].Name != "dave" || !accts[1].HasCRAM {
		t.Fatalf("list after CRAM-MD5 add = %+v", accts)
	}

	ok(user("", "addr", "del", "alice@example.com", "sales@example.com"), "may no longer send as")
	fails(user("", "addr", "del", "alice@example.com", "sales@example.com"), "not owned")
	ok(user("", "del", "alice@example.com"), "deleted account")
	fails(user("", "del", "alice@example.com"), "no such account")
	ok(user("", "del", "dave"), "deleted account")
	if r := user("", "list", "--json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("list --json of an empty database = %q", r.stdout)
	}
}
