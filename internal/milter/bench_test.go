package milter

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
	gomilter "github.com/emersion/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/accounts"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

// BenchmarkAuthenticatedMessage is the milter's cost per authenticated
// message as Postfix's cleanup sees it (MAIL, two RCPTs, five header
// fields, end of message) with the real limiter, accounts and userdb over
// one SQLite database, over a unix socket. Every recipient is new to its
// sender but in "known", where each sender writes to the same 20
// recipients again and again (the counts and the recipients seen come
// from the limiter's copy of the counters, not from statements), and
// "paced", which is "known" at about Postfix's rate in bench/milter (each
// session waits 50 ms between messages: ~400 messages/s, a few per shared
// write transaction).
//
//	go test -run '^$' -bench AuthenticatedMessage -benchtime 2000x ./internal/milter
func BenchmarkAuthenticatedMessage(b *testing.B) {
	for _, v := range []struct {
		name                 string
		limits, accts, known bool
		pace                 time.Duration
	}{{"all", true, true, false, 0}, {"known", true, true, true, 0}, {"paced", true, true, true, 50 * time.Millisecond},
		{"no-limits", false, true, false, 0}, {"no-accounts", true, false, false, 0}, {"bare", false, false, false, 0}} {
		b.Run(v.name, func(b *testing.B) { benchMessage(b, v.limits, v.accts, v.known, v.pace) })
	}
}

func benchMessage(b *testing.B, limits, accts, known bool, pace time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := b.TempDir()
	cfg := config.Default()
	cfg.LocalDomains = []string{"example.test"}
	cfg.Delivery.RateLimits.UserMessagesPerHour = 1 << 30
	cfg.Delivery.RateLimits.UserRecipientsPerDay = 1 << 30
	cfg.Delivery.RateLimits.UserNewRecipientsPerDay = 1 << 30
	cfg.Accounts.VolumeMinimum = 1 << 30
	if err := cfg.Finish(dir); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	st, err := store.Open(ctx, dir, "", log)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	counters, err := ratelimit.NewStore(ctx, st, log)
	if err != nil {
		b.Fatal(err)
	}
	lim, err := ratelimit.New(cfg.Delivery.RateLimits, counters, ratelimit.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	users, err := userdb.Open(ctx, st.DB, userdb.Options{PasswordHash: "bcrypt"})
	if err != nil {
		b.Fatal(err)
	}
	acct, err := accounts.Open(ctx, cfg, st, accounts.Setup{Command: "bench", Log: log})
	if err != nil {
		b.Fatal(err)
	}
	// As the daemon: the accounts' writer and responder run (and stop
	// before the database closes).
	actx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); acct.Run(actx, time.Second) }()
	defer func() { stop(); <-ran }()
	cfg.Milter.SMTPSendLimits = limits
	o := Options{Config: cfg.Milter, Limiter: lim, Log: maillog.New(log),
		Owners: UserDBOwners{Users: users, LocalDomains: cfg.Site.LocalDomains}}
	if accts {
		o.Accounts = accounts.Hooks{S: acct}
	}
	s, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := Listen("unix:" + filepath.Join(dir, "m.sock"))
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(ctx, ln)
	b.ResetTimer()
	cpu0 := processCPU()
	defer func() {
		// The process's CPU time (user and system, milter and go-milter's
		// client both: the client's share is "bare"'s at most) per message:
		// on a loaded machine, wall time per message mostly measures the
		// neighbours.
		b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	}()
	var seq atomic.Int64
	b.SetParallelism(10) // 20 sessions on 2 cores, as Postfix's smtpd processes
	b.RunParallel(func(pb *testing.PB) {
		c := gomilter.NewClientWithOptions("unix", ln.Addr().String(), gomilter.ClientOptions{ActionMask: gomilter.OptQuarantine, ProtocolMask: gomilter.OptNoBody})
		defer c.Close()
		sess, err := c.Session()
		if err != nil {
			b.Fatal(err)
		}
		defer sess.Close()
		sess.Conn("client", gomilter.FamilyInet, 40000, "192.0.2.7")
		for pb.Next() {
			time.Sleep(pace)
			i := seq.Add(1)
			user := fmt.Sprintf("bob%d", i%50)
			var h textproto.Header
			h.Add("From", "Bob <"+user+"@example.test>")
			h.Add("To", "a@remote.test, b@remote.test")
			h.Add("Subject", "bench")
			h.Add("Date", "Sun, 6 Dec 2026 05:00:00 +0000")
			h.Add("Message-Id", "<x@example.test>")
			sess.Macros(gomilter.CodeMail, "{auth_authen}", user, "{client_addr}", "192.0.2.7")
			if act, err := sess.Mail("<"+user+"@example.test>", nil); err != nil || act.Code != gomilter.ActContinue {
				b.Fatalf("MAIL: %+v %v", act, err)
			}
			rcpt := i
			if known {
				rcpt = i % 500 // 10 of them per sender
			}
			for r := range 2 {
				if act, err := sess.Rcpt(fmt.Sprintf("<r%d-%d@remote.test>", rcpt, r), nil); err != nil || act.Code != gomilter.ActContinue {
					b.Fatalf("RCPT: %+v %v", act, err)
				}
			}
			if act, err := sess.Header(h); err != nil || act.Code != gomilter.ActContinue {
				b.Fatalf("headers: %+v %v", act, err)
			}
			sess.Macros(gomilter.CodeEOB, "i", fmt.Sprintf("Q%d", i))
			if _, act, err := sess.End(); err != nil || act.Code != gomilter.ActAccept {
				b.Fatalf("end: %+v %v", act, err)
			}
		}
	})
}

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
