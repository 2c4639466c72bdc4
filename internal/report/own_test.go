package report

import (
	"testing"

	"github.com/relayguard/relayguard/internal/maillog"
)

var ownCorpus = []string{
	"time=2026-12-03T00:00:01.276Z level=INFO msg=connection cid=3 client=142.116.222.229 listener=mx trusted=false\n",
	`time=2026-12-03T00:00:01.276Z level=INFO msg="connection closed" cid=3 client=142.116.222.229 listener=mx tls=false messages=1`,
	`time=2026-12-03T00:00:01.276Z level=INFO msg="message accepted" cid=3 client=142.116.222.229 listener=mx id=0dde0a915473f2d7 user="" from=news@s5223.de nrcpt=1 size=19315`,
	`msg=connection`, "msg=connection\r\n", `msg="connection"`, `msg="connection closed"`, `msg="connection\u0020closed"`,
	`msg=connection msg=banned prefix=192.0.2.1`, `msg=banned text="msg=connection"`, `text="a msg=connection" msg=banned`,
	`text="a msg=connection"`, `xmsg=connection`, `msg=connection2`, `msg="connection`, "msg=connection\tcid=1",
	`time=x msg=delivered id=1 rcpt=a@b`, `msg= connection`, `{"time":"2026-12-03T00:00:01Z","msg":"connection"}`,
}

// TestIgnoredOwn: a record ignoredOwn skips is one addOwn counts nothing
// for (not a record, or a connection opened or closed), and it does skip
// the connection records serve writes.
func TestIgnoredOwn(t *testing.T) {
	skipped := 0
	for _, s := range ownCorpus {
		if ignoredOwn(s) {
			skipped++
			checkIgnoredOwn(t, s)
		}
	}
	if skipped < 5 {
		t.Fatalf("ignoredOwn skipped %d of the corpus's connection records", skipped)
	}
}

func checkIgnoredOwn(t *testing.T, s string) {
	t.Helper()
	if !ignoredOwn(s) {
		return
	}
	if r, ok := maillog.Parse(s); ok && r.Kind != maillog.KindConnected && r.Kind != maillog.KindDisconnected {
		t.Fatalf("ignoredOwn(%q) skips a %q record", s, r.Kind)
	}
}

func FuzzIgnoredOwn(f *testing.F) {
	for _, s := range ownCorpus {
		f.Add(s)
	}
	f.Fuzz(checkIgnoredOwn)
}
