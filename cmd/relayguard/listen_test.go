package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnixListenOnAFile: a unix: listen path that is a file or a
// directory, not a socket, is named as such and left alone; it was
// "bind: address already in use", which reads as a busy socket.
func TestUnixListenOnAFile(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "main.cf")
	if err := os.WriteFile(file, []byte("important\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, kind string }{{file, "a file"}, {dir, "a directory"}} {
		for _, args := range [][]string{{"policy", "--listen", "unix:" + c.path}, {"milter", "--listen", "unix:" + c.path}} {
			_, errOut, code := runRG(t, bin, append([]string{"--data-dir", filepath.Join(dir, "data"), "--create-data-dir"}, args...)...)
			if want := c.path + " is " + c.kind + ", not a socket"; code == 0 || !strings.Contains(errOut, want) {
				t.Errorf("%v: exit %d, %q; want %q", args, code, errOut, want)
			}
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "important\n" {
		t.Fatalf("the file was touched: %q %v", b, err)
	}
}
