package main

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestStateCommandsActAsDataDirOwner: root running `user add` and `ban add`
// on a data directory that belongs to another user (the package's
// relayguard user; here nobody) leaves every file it creates to that user,
// after reading a configuration only root may read.
func TestStateCommandsActAsDataDirOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root")
		}
		t.Skip("this test needs root")
	}
	t.Parallel()
	bin := testBinary(t)
	const owner = 65534 // nobody
	base, err := os.MkdirTemp("", "relayguard-owner-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(base, "data")
	if err := os.Mkdir(data, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, owner, owner); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(base, "relayguard.toml")
	if err := os.WriteFile(conf, []byte("data_dir = '"+data+"'\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "--config", conf, "user", "add", "bob", "--password-stdin")
	cmd.Stdin = strings.NewReader("a long password 2\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("user add as root: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"ban", "add", "203.0.113.0/24"}, {"user", "list"}} {
		if out, err := exec.Command(bin, append([]string{"--config", conf}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v as root: %v\n%s", args, err, out)
		}
	}
	n := 0
	filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			t.Error(err)
			return nil
		}
		n++
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != owner || st.Gid != owner {
			t.Errorf("%s belongs to %d:%d, want the data directory's owner %d:%d", p, st.Uid, st.Gid, owner, owner)
		}
		return nil
	})
	if n < 2 {
		t.Fatalf("the commands created nothing in %s", data)
	}
	out, err := exec.Command(bin, "--config", conf, "user", "list").Output()
	if err != nil || !strings.Contains(string(out), "bob") {
		t.Errorf("user list: %v %q", err, out)
	}
}
