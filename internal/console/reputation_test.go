package console

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
)

// The reputation panel shows the audit's reputation monitor: nothing
// before its first check; "Check now" has it ask the DNS list (a real DNS
// server on loopback) about the server's own address, and the listing is
// on the overview; once the list drops the address, the next check says
// so. The action is logged with who asked; a read-only account cannot.
func TestReputationPanelFollowsTheMonitor(t *testing.T) {
	t.Parallel()
	dns := dnstest.Start(t)
	dns.Add(t, "2.0.0.127.bl.test. 60 IN A 127.0.0.2", "1.2.0.192.bl.test. 60 IN A 127.0.0.2")
	r := newRig(t, func(c *config.Config) {
		c.DNSBL.Zones = []string{"bl.test"}
		c.DNSBL.Resolvers = []string{dns.Addr}
	})
	type view struct {
		Reputation reputationView `json:"reputation"`
	}
	overview := func(c *client) reputationView {
		t.Helper()
		code, body := c.do("GET", "/api/overview", nil, nil)
		if code != http.StatusOK {
			t.Fatalf("overview: %d %s", code, body)
		}
		var v view
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatal(err)
		}
		return v.Reputation
	}
	ops := r.client()
	ops.login(adminName, adminPass)
	if v := overview(ops); !v.Available || !v.Checked.IsZero() || len(v.Listed) != 0 || v.Interval != "" || !v.Lists {
		t.Fatalf("before any check: %+v", v)
	}
	check := func(c *client) (int, reputationView) {
		t.Helper()
		code, body := c.do("POST", "/api/reputation/check", map[string]string{}, nil)
		var v reputationView
		if code == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &v); err != nil {
				t.Fatal(err)
			}
		}
		return code, v
	}
	code, v := check(ops)
	if code != http.StatusOK || v.Checked.IsZero() || len(v.Listed) != 1 || v.Listed[0].Subject != "192.0.2.1" ||
		!strings.Contains(v.Listed[0].Title, "bl.test") {
		t.Fatalf("check with the address listed: %d %+v", code, v)
	}
	if o := overview(ops); len(o.Listed) != 1 || !o.Checked.Equal(v.Checked) {
		t.Fatalf("overview after the check: %+v", o)
	}

	dns.Remove("1.2.0.192.bl.test")
	if code, v = check(ops); code != http.StatusOK || len(v.Listed) != 0 {
		t.Fatalf("check after the delisting: %d %+v", code, v)
	}
	r.rep.Interval = 90 * time.Minute // as [audit] reputation_interval = "90m" would
	if v := overview(ops); v.Interval != "90m" {
		t.Errorf("interval shown as %q, want 90m", v.Interval)
	}
	ro := r.client()
	ro.login(roName, roPass)
	if code, _ := check(ro); code != http.StatusForbidden {
		t.Errorf("read-only check: %d, want 403", code)
	}
	if l := r.log.String(); !strings.Contains(l, `action=reputation.check`) || !strings.Contains(l, "user=ops") {
		t.Errorf("the check is not logged with who asked:\n%s", l)
	}
}
