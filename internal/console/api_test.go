package console

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/queue"
)

// Bans: added and removed with a reason (logged with who did it), listed
// newest first in pages, found by an address inside a banned network; a
// network that is never banned is refused with a reason.
func TestBansAPI(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	ctx := context.Background()
	for i := range 250 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(i), 1}), 32)
		if _, err := r.guard.Ban(ctx, p, time.Hour, fmt.Sprintf("seed %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	c := r.client()
	c.login(adminName, adminPass)
	code, body := c.do("POST", "/api/bans", map[string]string{"prefix": "203.0.113.0/24", "duration": "2h", "reason": "scanner"}, nil)
	if code != http.StatusOK {
		t.Fatalf("add: %d %s", code, body)
	}
	b, ok := r.guard.Banned(netip.MustParseAddr("203.0.113.77"))
	if !ok || b.Until.Sub(b.Created) != 2*time.Hour || !strings.Contains(b.Reason, "scanner (console: ops)") {
		t.Fatalf("the guard's ban: %+v %v", b, ok)
	}
	r.console.bans.at = time.Time{} // the index copies the guard again
	p1 := decode[page[banView]](t, must(c.do("GET", "/api/bans?limit=100", nil, nil)))
	if p1.Total != 251 || len(p1.Items) != 100 || p1.Items[0].Prefix != "203.0.113.0/24" {
		t.Fatalf("first page: total %d, %d items, first %v", p1.Total, len(p1.Items), p1.Items[0])
	}
	p3 := decode[page[banView]](t, must(c.do("GET", "/api/bans?limit=100&offset=200", nil, nil)))
	if len(p3.Items) != 51 || p3.Offset != 200 {
		t.Fatalf("last page: %d items at %d", len(p3.Items), p3.Offset)
	}
	found := decode[page[banView]](t, must(c.do("GET", "/api/bans?q=203.0.113.77", nil, nil)))
	if found.Total != 1 || found.Items[0].Prefix != "203.0.113.0/24" {
		t.Fatalf("search by address: %+v", found)
	}
	if found := decode[page[banView]](t, must(c.do("GET", "/api/bans?q=seed+249", nil, nil))); found.Total != 1 {
		t.Errorf("search by reason: %+v", found)
	}
	for _, bad := range []map[string]string{
		{"prefix": "203.0.113.5", "reason": ""},
		{"prefix": "not an address", "reason": "x"},
		{"prefix": "127.0.0.0/8", "reason": "x"},
		{"prefix": "192.0.2.1", "reason": "own address"},
		{"prefix": "203.0.113.5", "reason": "x", "duration": "forever"},
	} {
		if code, body := c.do("POST", "/api/bans", bad, nil); code != http.StatusBadRequest {
			t.Errorf("add %v: %d %s, want 400", bad, code, body)
		}
	}
	if code, body := c.do("POST", "/api/bans/remove", map[string]string{"prefix": "203.0.113.0/24", "reason": "false positive"}, nil); code != http.StatusOK {
		t.Fatalf("remove: %d %s", code, body)
	}
	if _, ok := r.guard.Banned(netip.MustParseAddr("203.0.113.77")); ok {
		t.Error("still banned after removal")
	}
	if code, _ := c.do("POST", "/api/bans/remove", map[string]string{"prefix": "203.0.113.0/24", "reason": "again"}, nil); code != http.StatusNotFound {
		t.Errorf("removing what is not banned: %d, want 404", code)
	}
	log := r.log.String()
	for _, want := range []string{
		`msg="console action" user=ops client=127.0.0.1 action=ban text=203.0.113.0/24 reason=scanner err=""`,
		`msg="console action" user=ops client=127.0.0.1 action=unban text=203.0.113.0/24 reason="false positive" err=""`,
		`msg=unbanned prefix=203.0.113.0/24 reason=removed`,
		`action=ban text=127.0.0.0/8 reason=x err=`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s", want)
		}
	}
}

func must(code int, body string) string {
	if code != http.StatusOK {
		panic(fmt.Sprintf("status %d: %s", code, body))
	}
	return body
}

// Queue: listed by state in pages, newest first, with destinations and
// the last error; hold (reason required), release (due now), delete,
// flush; the header section of a message.
func TestQueueAPI(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	var ids []string
	for i := range 120 {
		ids = append(ids, r.putMessage("alice@mx.test", "alice@mx.test", fmt.Sprintf("u%d@d%d.test", i, i%3)))
	}
	// One deferred: tried once, with its error.
	env, _ := r.spool.Load(ids[5])
	env.Recipients[0].Attempts, env.Recipients[0].LastError = 1, "451 4.7.1 greylisted"
	env.Recipients[0].NextAttempt = time.Now().Add(time.Hour)
	if err := r.spool.Update(env); err != nil {
		t.Fatal(err)
	}
	c := r.client()
	c.login(adminName, adminPass)
	all := decode[page[msgView]](t, must(c.do("GET", "/api/queue?limit=50", nil, nil)))
	if all.Total != 120 || len(all.Items) != 50 {
		t.Fatalf("list: %d total, %d items", all.Total, len(all.Items))
	}
	def := decode[page[msgView]](t, must(c.do("GET", "/api/queue?state=deferred", nil, nil)))
	if def.Total != 1 || def.Items[0].ID != ids[5] || def.Items[0].LastError != "451 4.7.1 greylisted" || def.Items[0].Destinations[0] != "d2.test" {
		t.Fatalf("deferred: %+v", def)
	}
	if q := decode[page[msgView]](t, must(c.do("GET", "/api/queue?q=u77@", nil, nil))); q.Total != 1 || q.Items[0].ID != ids[77] {
		t.Errorf("search by recipient: %+v", q)
	}
	if code, _ := c.do("POST", "/api/queue/"+ids[1]+"/hold", map[string]string{}, nil); code != http.StatusBadRequest {
		t.Errorf("hold without a reason: %d", code)
	}
	if code, body := c.do("POST", "/api/queue/"+ids[1]+"/hold", map[string]string{"reason": "looks like spam"}, nil); code != http.StatusOK {
		t.Fatalf("hold: %d %s", code, body)
	}
	if env, _ := r.spool.Load(ids[1]); !env.Held || !strings.Contains(env.HoldReason, "held by ops (console): looks like spam") {
		t.Fatalf("held envelope: %+v", env)
	}
	if h := decode[page[msgView]](t, must(c.do("GET", "/api/queue?state=held", nil, nil))); h.Total != 1 || h.Items[0].ID != ids[1] {
		t.Errorf("held list right after the hold: %+v", h)
	}
	if code, body := c.do("POST", "/api/queue/"+ids[1]+"/release", map[string]string{}, nil); code != http.StatusOK {
		t.Fatalf("release: %d %s", code, body)
	}
	if env, _ := r.spool.Load(ids[1]); env.Held || env.Recipients[0].Status != queue.StatusQueued {
		t.Errorf("released envelope: %+v", env)
	}
	if code, body := c.do("POST", "/api/queue/flush", map[string]string{}, nil); code != http.StatusOK || !strings.Contains(body, `"flushed":1`) {
		t.Errorf("flush: %d %s", code, body)
	}
	if env, _ := r.spool.Load(ids[5]); !env.Recipients[0].NextAttempt.IsZero() {
		t.Error("flush left the deferred recipient's next attempt")
	}
	d := decode[messageDetail](t, must(c.do("GET", "/api/queue/"+ids[2], nil, nil)))
	if !strings.Contains(d.Headers, "Subject: test u2@d2.test") || strings.Contains(d.Headers, "body") {
		t.Errorf("headers: %q", d.Headers)
	}
	if code, body := c.do("POST", "/api/queue/"+ids[3]+"/delete", map[string]string{"reason": "spam"}, nil); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, body)
	}
	if _, err := r.spool.Load(ids[3]); err == nil {
		t.Error("deleted message still in the spool")
	}
	for path, want := range map[string]int{
		"/api/queue/" + ids[3] + "/release": http.StatusNotFound,
		"/api/queue/../../etc/release":      http.StatusNotFound,
		"/api/queue/" + ids[4] + "/explode": http.StatusNotFound,
	} {
		if code, body := c.do("POST", path, map[string]string{"reason": "x"}, nil); code != want {
			t.Errorf("POST %s: %d %s, want %d", path, code, body, want)
		}
	}
	if code, _ := c.do("GET", "/api/queue/nosuchid", nil, nil); code != http.StatusNotFound {
		t.Errorf("unknown message: %d", code)
	}
}

// The queue index sees messages added, changed and removed behind its
// back (another process, the scheduler) once its age has passed.
func TestQueueIndexFollowsTheSpool(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	q := r.console.queue
	id := r.putMessage("", "a@x.test", "b@y.test")
	all, err := q.all(context.Background())
	if err != nil || len(all) != 1 || all[0].State != stateQueued {
		t.Fatalf("first: %v %v", all, err)
	}
	if _, err := queue.Hold(r.spool, id, "by hand"); err != nil {
		t.Fatal(err)
	}
	id2 := r.putMessage("", "c@x.test", "d@y.test")
	q.invalidate()
	all, _ = q.all(context.Background())
	states := map[string]string{}
	for _, v := range all {
		states[v.ID] = v.State
	}
	if states[id] != stateHeld || states[id2] != stateQueued {
		t.Fatalf("after changes: %v", states)
	}
	if err := queue.Delete(r.spool, id); err != nil {
		t.Fatal(err)
	}
	q.invalidate()
	if all, _ = q.all(context.Background()); len(all) != 1 || all[0].ID != id2 {
		t.Fatalf("after delete: %v", all)
	}
}

// Accounts: suspending from the console suspends the mail account, the
// shared suspension (with who and why as its evidence) and holds the
// account's queued mail; unsuspending lifts all three and releases it.
func TestAccountSuspendAndUnsuspend(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	ctx := context.Background()
	if err := r.users.Add(ctx, "alice@mx.test", "alice's password"); err != nil {
		t.Fatal(err)
	}
	id := r.putMessage("alice@mx.test", "alice@mx.test", "x@remote.test")
	other := r.putMessage("bob@mx.test", "bob@mx.test", "x@remote.test")
	r.bus.Publish(ctx, event.Event{Kind: event.AuthSuccess, Source: "smtpd", IP: netip.MustParseAddr("198.51.100.4"), User: "alice@mx.test"})
	r.bus.Publish(ctx, event.Event{Kind: event.AuthSuccess, Source: "smtpd", IP: netip.MustParseAddr("198.51.100.9"), User: "alice@mx.test"})
	c := r.client()
	c.login(adminName, adminPass)
	list := decode[accountPage](t, must(c.do("GET", "/api/accounts", nil, nil)))
	if list.Total != 1 || list.Items[0].Name != "alice@mx.test" || list.Items[0].Logins != 2 || list.Items[0].Networks != 1 {
		t.Fatalf("list: %+v", list)
	}
	if code, _ := c.do("POST", "/api/accounts/alice@mx.test/suspend", map[string]string{"reason": ""}, nil); code != http.StatusBadRequest {
		t.Errorf("suspend without a reason: %d", code)
	}
	code, body := c.do("POST", "/api/accounts/alice@mx.test/suspend", map[string]string{"reason": "phishing report"}, nil)
	if code != http.StatusOK {
		t.Fatalf("suspend: %d %s", code, body)
	}
	if a, _ := r.users.Get(ctx, "alice@mx.test"); !a.Suspended {
		t.Error("mail account not suspended")
	}
	sp, ok, err := r.acct.Store().Suspended(ctx, "alice@mx.test")
	if err != nil || !ok || sp.Signal != config.SignalManual || !strings.Contains(sp.Evidence, "suspended by ops from the console: phishing report") {
		t.Fatalf("shared suspension: %+v %v %v", sp, ok, err)
	}
	if env, _ := r.spool.Load(id); !env.Held {
		t.Error("the account's queued mail not held")
	}
	if env, _ := r.spool.Load(other); env.Held {
		t.Error("another account's mail held")
	}
	d := decode[accountDetail](t, must(c.do("GET", "/api/accounts/alice@mx.test", nil, nil)))
	if !d.Suspended || d.Suspension == nil || d.Suspension.Signal != "manual" || len(d.LoginsSeen) != 1 || d.LoginsSeen[0].Network != "198.51.100.0/24" {
		t.Errorf("detail: %+v", d)
	}
	if len(d.Limits) == 0 {
		t.Error("no send limits in the detail")
	}
	code, body = c.do("POST", "/api/accounts/alice@mx.test/unsuspend", map[string]string{"reason": "password changed"}, nil)
	if code != http.StatusOK || !strings.Contains(body, `"released":1`) {
		t.Fatalf("unsuspend: %d %s", code, body)
	}
	if a, _ := r.users.Get(ctx, "alice@mx.test"); a.Suspended {
		t.Error("mail account still suspended")
	}
	if env, _ := r.spool.Load(id); env.Held {
		t.Error("mail not released")
	}
	if code, _ := c.do("POST", "/api/accounts/alice@mx.test/unsuspend", map[string]string{"reason": "again"}, nil); code != http.StatusOK {
		// userdb answers for a known account that is not suspended; the
		// accounts store has nothing: still done, nothing released.
		t.Logf("second unsuspend: %d", code)
	}
	if code, _ := c.do("GET", "/api/accounts/nobody@mx.test", nil, nil); code != http.StatusNotFound {
		t.Errorf("unknown account: %d", code)
	}
	if !strings.Contains(r.log.String(), `action=account.suspend text=alice@mx.test reason="phishing report"`) {
		t.Error("suspension not logged with who did it")
	}
}

// The overview's series come from the events (AUTH failures, bans) and,
// in serve, from the process's counters (connections, accepted, rejected,
// deferred); attacks in progress are the failures by network with the
// usernames tried; egress blocks by user and program.
func TestOverviewFromEventsAndMetrics(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	conns := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayguard_smtp_connections_total", Help: "x"}, []string{"listener"})
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relayguard_delivery_results_total", Help: "x"}, []string{"result"})
	r.reg.MustRegister(conns, deliveries)
	conns.WithLabelValues("mx").Add(5)
	r.console.stats.sample(r.reg) // the baseline
	conns.WithLabelValues("mx").Add(7)
	conns.WithLabelValues("submission").Add(3)
	deliveries.WithLabelValues("deferred").Add(2)
	deliveries.WithLabelValues("delivered").Add(40)
	r.console.stats.sample(r.reg)
	ctx := context.Background()
	for i, u := range []string{"admin", "root", "admin", "test"} {
		r.bus.Publish(ctx, event.Event{Kind: event.AuthFailure, Source: "smtpd", IP: netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}), User: u})
	}
	r.bus.Publish(ctx, event.Event{Kind: event.AuthFailure, Source: "smtpd", IP: netip.MustParseAddr("2001:db8::1"), User: "x", Attempts: 3})
	r.bus.Publish(ctx, event.Event{Kind: event.EgressBlocked, Source: "kernel", IP: netip.MustParseAddr("203.0.113.25"), User: "www-data",
		Detail: `uid=33 dst=203.0.113.25:25 pid=9 exe=/usr/bin/php8.2 cmdline="php x.php"`})
	if _, err := r.guard.Ban(ctx, netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	c := r.client()
	c.login(adminName, adminPass)
	o := decode[overviewView](t, must(c.do("GET", "/api/overview", nil, nil)))
	sum := func(xs []int64) (n int64) {
		for _, x := range xs {
			n += x
		}
		return
	}
	for series, want := range map[string]int64{seriesConnections: 10, seriesDeferred: 2, seriesAuthFailures: 7} {
		if got := sum(o.Series.Hour[series]); got != want {
			t.Errorf("%s over the hour: %d, want %d", series, got, want)
		}
		if got := sum(o.Series.Day[series]); got != want {
			t.Errorf("%s over the day: %d, want %d", series, got, want)
		}
	}
	if len(o.Series.Hour[seriesConnections]) != 60 || len(o.Series.Day[seriesConnections]) != 24 {
		t.Errorf("points: %d an hour, %d a day", len(o.Series.Hour[seriesConnections]), len(o.Series.Day[seriesConnections]))
	}
	if len(o.Attacks) != 2 || o.Attacks[0].Prefix != "198.51.100.0/24" || o.Attacks[0].Failures != 4 || o.Attacks[0].Addresses != 4 ||
		o.Attacks[0].Users[0].Key != "admin" || o.Attacks[0].Users[0].Count != 2 || o.Attacks[0].Banned != "198.51.100.0/24" || o.Attacks[1].Banned != "" {
		t.Errorf("attacks: %+v", o.Attacks)
	}
	if len(o.Egress) != 1 || o.Egress[0].User != "www-data" || o.Egress[0].Program != "/usr/bin/php8.2" {
		t.Errorf("egress: %+v", o.Egress)
	}
	if o.Bans.Total != 1 || o.Bans.BySource["manual"] != 1 || o.Queue.Total != 0 || !o.Queue.Available {
		t.Errorf("bans %+v, queue %+v", o.Bans, o.Queue)
	}
	if o.Audit.Available || !strings.Contains(o.Audit.Hint, "relayguard audit") {
		t.Errorf("audit without a report: %+v", o.Audit)
	}
}

// watch has no counters of Postfix's traffic: rejections come from the
// events and the series it cannot measure are not shown as zero.
func TestOverviewWithoutMetrics(t *testing.T) {
	t.Parallel()
	s := newStats(time.Now, false)
	s.publish(event.Event{Kind: event.RelayDenied, IP: netip.MustParseAddr("192.0.2.9")})
	s.publish(event.Event{Kind: event.DNSBLReject, IP: netip.MustParseAddr("192.0.2.9")})
	v := s.view()
	if _, ok := v.Hour[seriesConnections]; ok {
		t.Error("connections shown without a measure")
	}
	var n int64
	for _, x := range v.Hour[seriesRejected] {
		n += x
	}
	if n != 2 {
		t.Errorf("rejected %d, want 2", n)
	}
}

// The ring keeps a day: what is older drops out, and the hour and day
// windows add up what is inside them.
func TestRingWindows(t *testing.T) {
	var r ring
	base := int64(30_000_000)
	r.add(base, 1)
	r.add(base+59, 2)
	r.add(base+60, 4)
	if w := r.window(base+60, 60, 1); w[59] != 4 || w[58] != 2 || sumOf(w) != 6 {
		t.Errorf("hour window: %v", w)
	}
	if d := r.window(base+60, 24, 60); sumOf(d) != 7 {
		t.Errorf("day: %v", d)
	}
	r.add(base+ringMinutes+5, 8) // a day later: the first minutes are gone
	if d := r.window(base+ringMinutes+5, 24, 60); sumOf(d) != 8+4+2 {
		t.Errorf("after a day: sum %d", sumOf(d))
	}
	r.add(base, 100) // too old to keep
	if d := r.window(base+ringMinutes+5, 24, 60); sumOf(d) != 14 {
		t.Errorf("an old count came in: %d", sumOf(d))
	}
}

func sumOf(xs []int64) (n int64) {
	for _, x := range xs {
		n += x
	}
	return
}

// The latest audit report (relayguard audit's JSON) is shown, most severe
// findings first; a damaged file is an error on the page, not a crash.
func TestLatestAudit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "audit"), 0o755)
	os.WriteFile(AuditFile(dir), []byte(`{"host":"mx1","started":"2026-03-01T10:00:00Z","score":54,"grade":"D","counts":{"high":1},
"findings":[{"check":"listener.open-relay","area":"listeners","severity":"critical","subject":"127.0.0.1:25","title":"open relay","fix":"reject_unauth_destination","evidence":["x"]}],
"problems":[{"area":"identity","check":"dns","error":"timeout"}],"extra":true}`), 0o644)
	v := latestAudit(dir)
	if !v.Available || v.Grade != "D" || len(v.Findings) != 1 || v.Findings[0].Severity != "critical" || v.Problems != 1 {
		t.Errorf("audit: %+v", v)
	}
	os.WriteFile(AuditFile(dir), []byte(`{"host":`), 0o644)
	if v := latestAudit(dir); v.Available || v.Error == "" {
		t.Errorf("damaged: %+v", v)
	}
}

// The event stream sends ticks with the counts, and ends when the
// console stops (an http.Server's Shutdown would wait for it forever).
func TestStreamTicksAndEnds(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	c := r.client()
	c.login(adminName, adminPass)
	req, _ := http.NewRequest("GET", r.srv.URL+"/api/stream", nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var lines []string
	for sc.Scan() && len(lines) < 2 {
		if l := sc.Text(); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) < 2 || lines[0] != "event: tick" || !strings.Contains(lines[1], `"bans":0`) {
		t.Fatalf("stream: %q", lines)
	}
	r.console.Stop()
	done := make(chan struct{})
	go func() {
		for sc.Scan() {
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end when the console stopped")
	}
}

// The report of a day is relayguard report's HTML of the [report] logs,
// served with its own policy (inline style, no script) for the page's
// sandboxed frame.
func TestReportOfADay(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logf := filepath.Join(dir, "mail.log")
	var b strings.Builder
	ml := maillog.New(slogTo(&b))
	for i := range 4 {
		ml.AuthFailed(context.Background(), maillog.Conn{Client: netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}), Listener: "submission"}, "PLAIN", "admin", "bad credentials")
	}
	os.WriteFile(logf, []byte(b.String()), 0o644)
	r := newRig(t, func(c *config.Config) { c.Report.Logs = []string{logf, filepath.Join(dir, "rotated.gz")} })
	c := r.client()
	c.login(adminName, adminPass)
	day := time.Now().UTC().Format("2006-01-02")
	req, _ := http.NewRequest("GET", r.srv.URL+"/api/report?date="+day, nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<svg") || !strings.Contains(body, "198.51.100.1") {
		t.Fatalf("report: %d %.300s", resp.StatusCode, body)
	}
	if p := resp.Header.Get("Content-Security-Policy"); !strings.Contains(p, "sandbox") || strings.Contains(p, "script") {
		t.Errorf("report policy %q", p)
	}
	if code, _ := c.do("GET", "/api/report?date=yesterday", nil, nil); code != http.StatusBadRequest {
		t.Errorf("bad date: %d", code)
	}
}
