package audit_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"
)

// artifactDir is where the test keeps what a person may want to look at
// (the HTML page and its screenshot): $TEST_ARTIFACTS when set (as the report's tests),
// else a temporary directory removed with the test.
func artifactDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TEST_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// checkHTMLInChromium renders the audit's HTML page in headless Chromium:
// the page must be self-contained, the screenshot must not be blank, and
// the DOM Chromium built must hold the score, the chart and the findings
// named by checks.
func checkHTMLInChromium(t *testing.T, page []byte, name string, checks ...string) {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	hosttest.Need(t, err == nil, "chromium is not installed")
	s := string(page)
	if strings.Contains(s, "<script") || strings.Contains(s, "<link") || strings.Contains(s, "src=") ||
		strings.Contains(strings.ReplaceAll(s, `xmlns="http://www.w3.org/2000/svg"`, ""), "http://") {
		t.Errorf("HTML audit is not self-contained")
	}
	art := artifactDir(t)
	htmlFile := filepath.Join(art, name+".html")
	if err := os.WriteFile(htmlFile, page, 0o644); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(art, name+".png")
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--window-size=1200,2400"}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, chromium, append(base, "--screenshot="+shot, "file://"+htmlFile)...).CombinedOutput(); err != nil {
		t.Fatalf("chromium screenshot: %v\n%s", err, out)
	}
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	// A blank 1200x2400 PNG compresses to a few KB; a rendered page with
	// text, badges and a chart is far larger.
	if len(png) < 30000 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot %s looks blank (%d bytes)", shot, len(png))
	}
	dom, err := exec.CommandContext(ctx, chromium, append(base, "--dump-dom", "file://"+htmlFile)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	for _, want := range append([]string{`id="score"`, `id="chart-areas"`, `class="bar"`, `class="sev sev-critical"`}, checks...) {
		if !bytes.Contains(dom, []byte(want)) {
			t.Errorf("rendered DOM lacks %s", want)
		}
	}
	t.Logf("audit page %s, screenshot %s (%d bytes)", htmlFile, shot, len(png))
}
