package report

import (
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/logline"
)

// TestClientJobQueuedWhole: a job that its batch does not tell (here: no
// message parsed ahead) is queued whole and counted when the batch's jobs
// are done, as a job done at once is.
func TestClientJobQueuedWhole(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	msg := "warning: unknown[192.0.2.7]: SASL LOGIN authentication failed: UGFzc3dvcmQ6, sasl_username=alice"
	for _, queued := range []bool{false, true} {
		a := NewAnalyzer(DefaultOptions())
		b := &batch{parsed: []logline.Line{{Time: at}}, evAt: []int32{-1}, ownAt: []int32{-1}}
		if queued {
			a.abuse.batch, a.abuse.line = b, 0
		}
		a.abuse.logged("postfix/smtpd", msg, at)
		a.abuse.batch = nil
		if queued {
			if len(b.jobs) != 1 || len(b.jobX) != 1 || b.jobs[0].x != 0 {
				t.Fatalf("queued %d jobs, %d whole: %+v", len(b.jobs), len(b.jobX), b.jobs)
			}
			if ab := a.abuse.summary(-1); ab.AuthFailures != 0 {
				t.Fatalf("counted before the batch's jobs were done: %d", ab.AuthFailures)
			}
			a.abuse.doQueued(b)
		}
		ab := a.abuse.summary(-1)
		if ab.AuthFailures != 1 || len(ab.AuthByAddress) != 1 || ab.AuthByAddress[0].Key != "192.0.2.7" ||
			len(ab.AuthByAddress[0].Users) != 1 || ab.AuthByAddress[0].Users[0].Key != "alice" {
			t.Fatalf("queued %v: %+v", queued, ab.AuthByAddress)
		}
	}
}
