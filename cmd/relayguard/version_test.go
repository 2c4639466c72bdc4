package main

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/version"
)

// TestVersionAgreesWithGoVersion: `relayguard version`, `--version` and
// `version --json` report what `go version -m` (the go command's own reader
// of the stamp) finds in the same binary.
func TestVersionAgreesWithGoVersion(t *testing.T) {
	bin := testBinary(t)
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	var modVersion, revision string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "mod" && f[1] == "github.com/relayguard/relayguard" {
			modVersion = f[2]
		}
		if len(f) >= 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision=") {
			revision = strings.TrimPrefix(f[1], "vcs.revision=")
		}
	}
	if modVersion == "" {
		t.Fatalf("go version -m shows no main module:\n%s", out)
	}
	text := run(t, bin, "version")
	if first := strings.SplitN(text, "\n", 2)[0]; first != "relayguard "+modVersion {
		t.Errorf("version first line %q, want %q", first, "relayguard "+modVersion)
	}
	if revision != "" && !strings.Contains(text, "commit "+revision) {
		t.Errorf("version does not name the stamped commit %s:\n%s", revision, text)
	}
	if revision == "" && !strings.Contains(text, "commit unknown") {
		t.Errorf("version without a stamped commit should say so:\n%s", text)
	}
	if v := run(t, bin, "--version"); v != text {
		t.Errorf("--version printed\n%s\nversion printed\n%s", v, text)
	}
	var info version.Info
	if err := json.Unmarshal([]byte(run(t, bin, "version", "--json")), &info); err != nil {
		t.Fatal(err)
	}
	if info.Version != modVersion || info.Commit != revision || info.Module != "github.com/relayguard/relayguard" {
		t.Errorf("version --json = %+v, want version %s commit %q", info, modVersion, revision)
	}
}

// TestVersionNamesTheCommit builds relayguard from a fresh git repository
// holding this module's source and checks that `relayguard version` names
// that repository's commit, its time, and a pseudo-version made from them,
// then that an uncommitted change is reported as such.
func TestVersionNamesTheCommit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("git is not installed")
		}
		t.Skip("git is not installed")
	}
	repo := t.TempDir()
	copyModule(t, "../..", repo)
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org",
			"GIT_COMMITTER_DATE=2025-03-04T05:06:07Z", "GIT_AUTHOR_DATE=2025-03-04T05:06:07Z")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", "-A")
	git("commit", "-q", "-m", "snapshot")
	head := git("rev-parse", "HEAD")

	build := func() string {
		t.Helper()
		bin := filepath.Join(t.TempDir(), "relayguard")
		cmd := exec.Command("go", "build", "-buildvcs=true", "-o", bin, "./cmd/relayguard")
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		return bin
	}
	text := run(t, build(), "version")
	want := "relayguard v0.0.0-20250304050607-" + head[:12] + "\n" +
		"commit " + head + " (2025-03-04T05:06:07Z)\n"
	if !strings.HasPrefix(text, want) {
		t.Errorf("version printed\n%s\nwant it to begin with\n%s", text, want)
	}

	if err := os.WriteFile(filepath.Join(repo, "cmd", "relayguard", "zz_local.go"), []byte("package main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	text = run(t, build(), "version")
	if !regexp.MustCompile(`^relayguard v0\.0\.0-20250304050607-` + head[:12] + `\+dirty\ncommit ` + head + ` \(2025-03-04T05:06:07Z\), with uncommitted changes\n`).MatchString(text) {
		t.Errorf("version of a modified tree printed\n%s", text)
	}
}

// copyModule copies the files the build needs (go.mod, go.sum, cmd/,
// internal/) from src to dst.
func copyModule(t *testing.T, src, dst string) {
	t.Helper()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{"cmd", "internal"} {
		err := filepath.WalkDir(filepath.Join(src, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			if d.IsDir() {
				return os.MkdirAll(filepath.Join(dst, rel), 0o755)
			}
			if !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// run runs the binary and returns its standard output, failing the test on
// a non-zero exit.
func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %v: %v\n%s", bin, args, err, stderr)
	}
	return string(out)
}
