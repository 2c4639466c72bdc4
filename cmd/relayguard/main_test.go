package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var binDir string

// relayguardBinary builds the command once for all the CLI tests of this
// package (faster than `go run` for every invocation).
var relayguardBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "relayguard-cli-test-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "relayguard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", errors.New("go build: " + err.Error() + "\n" + string(out))
	}
	return bin, nil
})

// testBinary is relayguardBinary for a test: a failed build fails it.
func testBinary(t *testing.T) string {
	t.Helper()
	bin, err := relayguardBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
