package accounts

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/config"
)

// Dovecot's side of the protocol over real HTTP: malformed requests are
// refused with a status and logged, allow answers -1 for a suspended
// account and a decoy (banned), report feeds the detector.
func TestDovecotPolicyProtocol(t *testing.T) {
	e := newEnv(t, config.Default().Accounts)
	srv := httptest.NewServer(DovecotPolicy{S: e.svc})
	defer srv.Close()
	post := func(command, body string) (int, int) {
		t.Helper()
		resp, err := http.Post(srv.URL+"/?command="+command, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r dovecotReply
		if resp.StatusCode == 200 {
			if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
				t.Fatalf("reply: %v", err)
			}
		}
		return resp.StatusCode, r.Status
	}
	if code, _ := post("allow", `{"login": "bob"`); code != 400 {
		t.Errorf("truncated JSON: %d", code)
	}
	if code, _ := post("frobnicate", `{}`); code != 400 {
		t.Errorf("unknown command: %d", code)
	}
	if resp, err := http.Get(srv.URL + "/?command=allow"); err != nil || resp.StatusCode != 405 {
		t.Errorf("GET: %v %v", resp, err)
	}
	if _, st := post("allow", `{"login":"bob","remote":"198.51.100.7","protocol":"smtp"}`); st != 0 {
		t.Errorf("bob allowed: %d", st)
	}
	if code, _ := post("report", `{"login":"bob","remote":"198.51.100.7","protocol":"imap","success":true,"policy_reject":false}`); code != 200 {
		t.Errorf("report: %d", code)
	}
	if ok, _ := e.store.LoggedIn(context.Background(), "bob"); !ok {
		t.Error("a reported login did not reach the detector")
	}
	e.svc.Suspend(context.Background(), "bob", config.SignalManual, "test")
	if _, st := post("allow", `{"login":"bob","remote":"198.51.100.7","protocol":"smtp"}`); st != -1 {
		t.Errorf("suspended bob allowed: %d", st)
	}
	if _, st := post("allow", `{"login":"root","remote":"203.0.113.77","protocol":"smtp"}`); st != -1 {
		t.Errorf("decoy allowed: %d", st)
	}
	if len(e.bans.p) != 1 || e.bans.p[0].String() != "203.0.113.0/24" {
		t.Errorf("decoy bans %v", e.bans.p)
	}
	if !strings.Contains(e.logs.String(), "dovecot policy request malformed") {
		t.Errorf("malformed request not logged:\n%s", e.logs)
	}
}
