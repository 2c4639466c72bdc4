package deliver_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/hosttest"
)

func rcptList(n int, domain string) []string {
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("a%d@%s", i, domain))
	}
	return out
}

// A next hop that limits recipients per transaction answers the excess
// RCPTs 452 (RFC 5321 §4.5.3.1.8), or 552 as RFC 821 had it
// (§4.5.3.1.10: treated as temporary). The client sends those recipients
// in new transactions on the same connection at once; each recipient is
// delivered exactly once and none is left to the retry schedule.
func TestRecipientLimitNewTransaction(t *testing.T) {
	for _, c := range []struct {
		name  string
		limit int
		n     int
		reply *smtp.SMTPError
	}{
		{"452 4.5.3", 2, 4, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}},
		{"552 5.5.3", 2, 4, &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 5, 3}, Message: "Too many recipients"}},
		{"452 without enhanced code", 2, 5, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.NoEnhancedCode, Message: "Too many recipients"}},
		{"one per transaction", 1, 3, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			peer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{RcptLimit: c.limit, RcptLimitReply: c.reply})
			s := newSetup(t)
			s.cfg.Transports = map[string]string{"limit.test": "smtp:" + peer.Addr}
			rcpts := rcptList(c.n, "limit.test")
			res := s.deliverer(t).Deliver(context.Background(), "limit.test", request(rcpts...))
			wantOK(t, res, c.n)
			var got []string
			for _, m := range peer.Messages() {
				if len(m.Rcpts) > c.limit {
					t.Errorf("a transaction carried %d recipients, over the limit %d", len(m.Rcpts), c.limit)
				}
				if string(m.Data) != testMsg {
					t.Errorf("message altered: %q", m.Data)
				}
				got = append(got, m.Rcpts...)
			}
			slices.Sort(got)
			if !slices.Equal(got, rcpts) {
				t.Fatalf("the peer received recipients %v, want each of %v once", got, rcpts)
			}
			if want := (c.n + c.limit - 1) / c.limit; len(peer.Messages()) != want {
				t.Fatalf("%d transactions, want %d", len(peer.Messages()), want)
			}
		})
	}
}

// A hop that puts off every recipient gets no second transaction: the
// recipients are deferred (a 552 "too many recipients" too, RFC 5321
// §4.5.3.1.10) to the retry schedule. Another 452 (a full mailbox, RFC
// 3463 X.2.2) is an ordinary deferral, not a reason for a new transaction.
func TestRecipientLimitBounded(t *testing.T) {
	for _, c := range []struct {
		name      string
		limit     int
		reply     *smtp.SMTPError
		delivered int
		messages  int
	}{
		{"452 to all", 0, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}, 0, 0},
		{"552 to all", 0, &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 5, 3}, Message: "Too many recipients"}, 0, 0},
		{"452 mailbox full", 2, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}, 2, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			peer := delivertest.StartGoPeer(t, delivertest.GoPeerOptions{RcptLimit: c.limit, RcptLimitReply: c.reply})
			s := newSetup(t)
			s.cfg.Transports = map[string]string{"limit.test": "smtp:" + peer.Addr}
			res := s.deliverer(t).Deliver(context.Background(), "limit.test", request(rcptList(4, "limit.test")...))
			if len(res) != 4 {
				t.Fatalf("got %d results: %+v", len(res), res)
			}
			for i, r := range res {
				if i < c.delivered {
					if !r.OK {
						t.Fatalf("%s not delivered: %+v", r.Rcpt, r)
					}
					continue
				}
				if r.OK || !r.Temp || r.Code != c.reply.Code {
					t.Fatalf("%s: got %+v, want deferred with %d", r.Rcpt, r, c.reply.Code)
				}
			}
			if len(peer.Messages()) != c.messages {
				t.Fatalf("the peer took %d messages, want %d", len(peer.Messages()), c.messages)
			}
		})
	}
}

// Postfix as a next hop with smtpd_recipient_limit = 2 (it answers the
// third RCPT "452 4.5.3 Error: too many recipients"): four recipients are
// all delivered in one attempt, two per transaction, each once (Postfix
// relays each to an smtp-sink).
func TestPostfixPeerRecipientLimit(t *testing.T) {
	hosttest.NeedPostfix(t)
	sink := delivertest.StartSink(t)
	port := delivertest.FreePort(t)
	hosttest.StartPostfix(t, hosttest.PostfixConfig{
		Listen: fmt.Sprintf("127.0.0.1:%d", port),
		Main: fmt.Sprintf(`
mynetworks = 127.0.0.0/8
smtpd_recipient_limit = 2
transport_maps = inline:{example.test=smtp:[127.0.0.1]:%d}
relay_domains = example.test
`, sink.Port),
	})
	delivertest.WaitListening(t, "tcp", fmt.Sprintf("127.0.0.1:%d", port))

	cfg := config.Default().Delivery
	cfg.MTASTS, cfg.DANE = false, false
	cfg.TLSPolicy = config.TLSNone
	cfg.ConnectTimeout = config.Duration(5 * time.Second)
	cfg.Transports = map[string]string{"example.test": fmt.Sprintf("smtp:127.0.0.1:%d", port)}
	res, _ := deliver.NewResolver("127.0.0.1:1", time.Second)
	d, err := deliver.New(cfg, "relay.test", slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), deliver.Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	rcpts := rcptList(4, "example.test")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wantOK(t, d.Deliver(ctx, "example.test", request(rcpts...)), 4)

	var got []string
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < len(rcpts) && time.Now().Before(deadline) {
		got = got[:0]
		for _, m := range sink.Messages(t) {
			got = append(got, m.Rcpts...)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // a duplicate would arrive with the others
	got = got[:0]
	for _, m := range sink.Messages(t) {
		got = append(got, m.Rcpts...)
	}
	slices.Sort(got)
	if !slices.Equal(got, rcpts) {
		t.Fatalf("Postfix relayed recipients %v, want each of %v once", got, rcpts)
	}
}

// A hop that limits recipients to two per transaction and drops the
// connection at the second MAIL FROM: the recipients of the first
// transaction, which the peer acknowledged, stay delivered (they are not
// sent again nor reported deferred); the rest are deferred, not lost.
func TestRecipientLimitSecondTransactionLost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var messages atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				r := bufio.NewReader(c)
				io.WriteString(c, "220 drop.test ESMTP\r\n")
				mails, rcpts, inData := 0, 0, false
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.ToUpper(strings.TrimSpace(line))
					switch {
					case inData:
						if cmd == "." {
							inData = false
							messages.Add(1)
							io.WriteString(c, "250 2.0.0 queued\r\n")
						}
					case strings.HasPrefix(cmd, "EHLO"):
						io.WriteString(c, "250-drop.test\r\n250 8BITMIME\r\n")
					case strings.HasPrefix(cmd, "MAIL"):
						if mails++; mails > 1 {
							return // the connection is lost
						}
						rcpts = 0
						io.WriteString(c, "250 2.1.0 ok\r\n")
					case strings.HasPrefix(cmd, "RCPT"):
						if rcpts++; rcpts > 2 {
							io.WriteString(c, "452 4.5.3 Too many recipients\r\n")
						} else {
							io.WriteString(c, "250 2.1.5 ok\r\n")
						}
					case cmd == "DATA":
						inData = true
						io.WriteString(c, "354 go ahead\r\n")
					case cmd == "QUIT":
						io.WriteString(c, "221 bye\r\n")
						return
					default:
						io.WriteString(c, "250 ok\r\n")
					}
				}
			}()
		}
	}()
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"drop.test": "smtp:" + ln.Addr().String()}
	res := s.deliverer(t).Deliver(context.Background(), "drop.test", request(rcptList(4, "drop.test")...))
	if len(res) != 4 {
		t.Fatalf("got %d results: %+v", len(res), res)
	}
	for i, r := range res {
		if i < 2 && !r.OK {
			t.Fatalf("%s was acknowledged by the peer but reported %+v", r.Rcpt, r)
		}
		if i >= 2 && (r.OK || !r.Temp) {
			t.Fatalf("%s: got %+v, want deferred", r.Rcpt, r)
		}
	}
	if messages.Load() != 1 {
		t.Fatalf("the peer took %d messages, want 1", messages.Load())
	}
}

// A hop that answers the recipients over its limit 552 5.5.3 (RFC 821's
// code, to be treated as temporary: RFC 5321 §4.5.3.1.10) and then drops
// the connection at DATA, in the first transaction or in a later one: the
// recipients it put off are deferred, not bounced (breaker10: at 7c2b70a
// a3 and a4 got a permanent failure when the transaction failed, since
// only a transaction that ended well had its 552s taken as temporary).
func TestRecipientLimit552ThenDropped(t *testing.T) {
	for _, dropAt := range []int{1, 2} { // the transaction whose DATA is dropped
		t.Run(fmt.Sprintf("DATA %d", dropAt), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						c.SetDeadline(time.Now().Add(30 * time.Second))
						r := bufio.NewReader(c)
						io.WriteString(c, "220 drop.test ESMTP\r\n")
						mails, rcpts, inData := 0, 0, false
						for {
							line, err := r.ReadString('\n')
							if err != nil {
								return
							}
							cmd := strings.ToUpper(strings.TrimSpace(line))
							switch {
							case inData:
								if cmd == "." {
									inData = false
									io.WriteString(c, "250 2.0.0 queued\r\n")
								}
							case strings.HasPrefix(cmd, "EHLO"):
								io.WriteString(c, "250-drop.test\r\n250 8BITMIME\r\n")
							case strings.HasPrefix(cmd, "MAIL"):
								mails++
								rcpts = 0
								io.WriteString(c, "250 2.1.0 ok\r\n")
							case strings.HasPrefix(cmd, "RCPT"):
								if rcpts++; rcpts > 1 {
									io.WriteString(c, "552 5.5.3 Too many recipients\r\n")
								} else {
									io.WriteString(c, "250 2.1.5 ok\r\n")
								}
							case cmd == "DATA":
								if mails == dropAt {
									return // the connection is lost
								}
								inData = true
								io.WriteString(c, "354 go ahead\r\n")
							case cmd == "QUIT":
								io.WriteString(c, "221 bye\r\n")
								return
							default:
								io.WriteString(c, "250 ok\r\n")
							}
						}
					}()
				}
			}()
			s := newSetup(t)
			s.cfg.Transports = map[string]string{"drop.test": "smtp:" + ln.Addr().String()}
			res := s.deliverer(t).Deliver(context.Background(), "drop.test", request(rcptList(4, "drop.test")...))
			if len(res) != 4 {
				t.Fatalf("got %d results: %+v", len(res), res)
			}
			for _, r := range res {
				if !r.OK && !r.Temp {
					t.Errorf("%s: got %+v, want deferred (or delivered): a 552 5.5.3 is temporary", r.Rcpt, r)
				}
			}
		})
	}
}

// A hop taking one recipient per transaction, for a message of 100: every
// recipient is delivered once, and each further transaction offers no more
// recipients than the first took (the limit it showed), so the RCPTs sent
// grow with the recipients, not with their square (breaker10: at 7c2b70a
// each transaction offered every recipient left, 5,050 RCPTs for 100
// recipients, ~500,000 for 1,000: a 15 MB dialogue, hours without
// pipelining, and as many 452s for the peer's abuse counters).
func TestRecipientLimitRcptsLinear(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var rcptCmds, messages atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				r := bufio.NewReader(c)
				io.WriteString(c, "220 one.test ESMTP\r\n")
				rcpts, inData := 0, false
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.ToUpper(strings.TrimSpace(line))
					switch {
					case inData:
						if cmd == "." {
							inData = false
							messages.Add(1)
							io.WriteString(c, "250 2.0.0 queued\r\n")
						}
					case strings.HasPrefix(cmd, "EHLO"):
						io.WriteString(c, "250-one.test\r\n250 8BITMIME\r\n")
					case strings.HasPrefix(cmd, "MAIL"):
						rcpts = 0
						io.WriteString(c, "250 2.1.0 ok\r\n")
					case strings.HasPrefix(cmd, "RCPT"):
						rcptCmds.Add(1)
						if rcpts++; rcpts > 1 {
							io.WriteString(c, "452 4.5.3 Too many recipients\r\n")
						} else {
							io.WriteString(c, "250 2.1.5 ok\r\n")
						}
					case cmd == "DATA":
						inData = true
						io.WriteString(c, "354 go ahead\r\n")
					case cmd == "QUIT":
						io.WriteString(c, "221 bye\r\n")
						return
					default:
						io.WriteString(c, "250 ok\r\n")
					}
				}
			}()
		}
	}()
	const n = 100
	s := newSetup(t)
	s.cfg.Transports = map[string]string{"one.test": "smtp:" + ln.Addr().String()}
	res := s.deliverer(t).Deliver(context.Background(), "one.test", request(rcptList(n, "one.test")...))
	wantOK(t, res, n)
	if m := messages.Load(); m != n {
		t.Errorf("the peer took %d messages, want %d (one recipient each)", m, n)
	}
	// The first transaction offers all n; each further one at most one.
	if got := rcptCmds.Load(); got > 2*n {
		t.Errorf("%d RCPT commands for %d recipients, want at most %d", got, n, 2*n)
	}
}
