package audit_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// TestQueueBackscatterAndSpamRun fills a real Postfix queue through
// sendmail(1) run as a web server's uid, with every delivery deferred:
// bounces (null sender) to outside addresses, and one sender's mail to 25
// domains. The audit reads the queue with postqueue -j and reports the
// backscatter and the spam run with the commands that stop them; once the
// queue is emptied, neither is reported.
func TestQueueBackscatterAndSpamRun(t *testing.T) {
	t.Parallel()
	hosttest.NeedRoot(t, "unshare", "setpriv")
	h := newHost(t, "", "")
	p := h.startPostfix("default_transport = retry:4.4.1 remote host unreachable (test)\nrelay_transport = $default_transport\n", "")
	msg := []byte("Subject: x\r\n\r\nhello\r\n")
	for i := range 3 {
		if out, err := p.Sendmail(33, 33, "", []string{fmt.Sprintf("forged%d@victim%d.example", i, i)}, msg); err != nil {
			t.Fatalf("sendmail: %v\n%s", err, out)
		}
	}
	var rcpts []string
	for i := range 25 {
		rcpts = append(rcpts, fmt.Sprintf("buyer@shop%d.example", i))
	}
	if out, err := p.Sendmail(33, 33, "www-data@example.test", rcpts, msg); err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
	hosttest.Eventually(t, "4 messages deferred", func() bool {
		n := 0
		for _, e := range p.Queue(t) {
			if e.QueueName == "deferred" {
				n++
			}
		}
		return n == 4
	})
	rep, code, stderr := h.audit("--areas", "queue")
	if code != audit.ExitFindings {
		t.Fatalf("exit %d\n%s\n%s", code, stderr, dump(rep))
	}
	f := mustFind(t, rep, "queue.backscatter", audit.Medium, "3 bounces queued to outside addresses")
	if !strings.Contains(f.Fix, "postsuper -c "+p.Etc+" -d") {
		t.Errorf("fix %q", f.Fix)
	}
	f = mustFind(t, rep, "queue.spam-run", audit.High, "to 25 domains")
	if f.Subject != "www-data@example.test" || !strings.Contains(f.Fix, "postsuper -c "+p.Etc+" -h") {
		t.Errorf("subject %q fix %q", f.Subject, f.Fix)
	}

	hosttest.Run(t, hosttest.PostfixBin+"/postsuper", "-c", p.Etc, "-d", "ALL")
	rep, _, _ = h.audit("--areas", "queue")
	mustNotFind(t, rep, "queue.backscatter")
	mustNotFind(t, rep, "queue.spam-run")
}
