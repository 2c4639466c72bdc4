package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestConsoleOnWatch: the console of `relayguard watch --admin` on a
// Postfix host, used as a script would, with an API token: the failed
// SASL logins Postfix logs are an attack on the overview and a ban in the
// list; the unban through the API is gone from the ban store (`relayguard
// ban list`); watch has no queue and says so; the action is in watch's
// log with the admin and the token; a wrong token is refused and logged
// as a failed login (what the guard counts).
func TestConsoleOnWatch(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	logPath := filepath.Join(dir, "mail.log")
	os.WriteFile(logPath, nil, 0o644)
	conf := filepath.Join(dir, "rg.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("[guard]\nmaxretry = 3\nfiles = [%q]\n[firewall]\nbackend = \"none\"\n[audit]\nreputation_interval = \"0\"\n", logPath)), 0o644)
	rg := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--config", conf, "--data-dir", data, "--create-data-dir")...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	rg("the console admin's password\n", "admin", "add", "ops", "--password-stdin")
	out := rg("", "admin", "token", "ops", "--label", "test")
	token := regexp.MustCompile(`(?m)^rgc_\S+$`).FindString(out)
	if token == "" {
		t.Fatalf("admin token printed %q", out)
	}

	var logs syncBuffer
	watch := exec.Command(bin, "watch", "--admin", "127.0.0.1:0", "--config", conf, "--data-dir", data)
	watch.Stderr, watch.Stdout = &logs, &logs
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Process.Kill(); watch.Wait() })
	var base string
	eventually(t, "watch's admin listener", func() bool {
		m := regexp.MustCompile(`listener=admin address=(http://127\.0\.0\.1:\d+)`).FindStringSubmatch(logs.String())
		if m != nil {
			base = m[1]
		}
		return m != nil && strings.Contains(logs.String(), "watching")
	})
	api := func(method, path, body, tok string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		fmt.Fprintf(f, "%s mx1 postfix/smtpd[1]: warning: unknown[198.51.100.9]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n", time.Now().Format(time.Stamp))
	}
	f.Close()

	var bans struct {
		Total int
		Items []struct{ Prefix, Reason, Source string }
	}
	eventually(t, "the ban in the console's list", func() bool {
		code, body := api("GET", "/api/bans?q=198.51.100.9", "", token)
		return code == http.StatusOK && json.Unmarshal([]byte(body), &bans) == nil && bans.Total == 1
	})
	if b := bans.Items[0]; b.Prefix != "198.51.100.9/32" || !strings.Contains(b.Reason, "3 failures") {
		t.Errorf("ban: %+v", b)
	}
	var ov struct {
		Command string
		Attacks []struct {
			Prefix   string
			Failures int
			Banned   string
		}
		Queue struct{ Available bool }
	}
	code, body := api("GET", "/api/overview", "", token)
	if code != http.StatusOK || json.Unmarshal([]byte(body), &ov) != nil {
		t.Fatalf("overview: %d %s", code, body)
	}
	if ov.Command != "watch" || ov.Queue.Available || len(ov.Attacks) != 1 || ov.Attacks[0].Prefix != "198.51.100.0/24" ||
		ov.Attacks[0].Failures != 3 || ov.Attacks[0].Banned != "198.51.100.9/32" {
		t.Errorf("overview: %s", body)
	}
	if code, body := api("GET", "/api/queue", "", token); code != http.StatusNotFound || !strings.Contains(body, "no queue in this process (watch)") {
		t.Errorf("queue on watch: %d %s", code, body)
	}
	if code, _ := api("GET", "/api/bans", "", "rgc_not-a-token"); code != http.StatusUnauthorized {
		t.Errorf("a wrong token: %d, want 401", code)
	}

	if code, body := api("POST", "/api/bans/remove", `{"prefix":"198.51.100.9","reason":"our monitoring host"}`, token); code != http.StatusOK {
		t.Fatalf("unban: %d %s", code, body)
	}
	if out := rg("", "ban", "list"); strings.Contains(out, "198.51.100.9") {
		t.Errorf("after the unban, ban list still shows it:\n%s", out)
	}
	if !strings.Contains(logs.String(), `msg="auth failed" client=127.0.0.1 listener=console mechanism=token user="" reason="invalid token"`) {
		t.Errorf("the wrong token is not logged as a failed login")
	}
	want := `msg="console action" user="ops, token 1" client=127.0.0.1 action=unban text=198.51.100.9 reason="our monitoring host"`
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("watch's log lacks %s:\n%s", want, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
