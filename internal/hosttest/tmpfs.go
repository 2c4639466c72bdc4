package hosttest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// OnSmallTmpfs runs the calling test again as a child process in a mount
// namespace of its own (unshare -m) where a tmpfs of the given size is
// mounted on a temporary directory, and there calls body with that
// directory: a real file system that fills up, gone with the child.
func OnSmallTmpfs(t *testing.T, size string, body func(t *testing.T, mnt string)) {
	t.Helper()
	if mnt := os.Getenv("RG_TMPFS_DIR"); mnt != "" {
		body(t, mnt)
		return
	}
	_, err := exec.LookPath("unshare")
	if err == nil && os.Geteuid() != 0 {
		err = errors.New("not root")
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("a small tmpfs in a mount namespace needs root and unshare (util-linux): %v", err)
		}
		t.Skipf("a small tmpfs in a mount namespace needs root and unshare (util-linux): %v", err)
	}
	mnt := t.TempDir()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs -o size="$1" rg-test "$2" && shift 2 && exec "$@"`, "sh", size, mnt,
		os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "RG_TMPFS_DIR="+mnt)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("%s on a %s tmpfs: %v\n%s", t.Name(), size, err, out)
	}
	t.Logf("on a %s tmpfs:\n%s", size, out)
}

// FillUp writes a file named filler in dir until its file system is full,
// to the last byte, and returns the file's path (remove it to give the
// space back).
func FillUp(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for _, n := range []int{len(chunk), 4096, 512, 1} { // then what is left of the last page
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				break
			}
		}
	}
	return p
}
