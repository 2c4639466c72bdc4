// Package event defines the one event stream of relayguard. Our own SMTP
// server, the Postfix policy service and the log parsers (Postfix, Dovecot,
// kernel) all produce the same Event; the guard turns events into bans.
package event

import (
	"context"
	"net/netip"
	"sync"
	"time"
)

// Kind says what happened.
type Kind string

// Event kinds.
const (
	AuthFailure   Kind = "auth_failure"   // SASL authentication failed
	AuthSuccess   Kind = "auth_success"   // SASL authentication succeeded
	RelayDenied   Kind = "relay_denied"   // Relay access denied (reject_unauth_destination)
	Reject        Kind = "reject"         // rejected by a rule (Rule names it)
	DNSBLReject   Kind = "dnsbl_reject"   // rejected because the client is listed (Detail names the zone)
	ProtocolAbuse Kind = "protocol_abuse" // non-SMTP command, pregreet, pipelining, too many errors
	LostAfterAuth Kind = "lost_after_auth"
	RateLimited   Kind = "rate_limited" // a per-user/IP limit bit
	EgressBlocked Kind = "egress_blocked"
	LoginSuccess  Kind = "login_success" // POP3/IMAP login (POP-before-SMTP)
	// MessageSubmitted: an account (User: the login) or a local program
	// (User: its user name, Detail "uid=N") had a message accepted for
	// delivery; the accounts' volume baselines count these.
	MessageSubmitted Kind = "message_submitted"
	// UnknownRecipient: RCPT to a local user that does not exist (550
	// 5.1.1); many of them are recipient enumeration.
	UnknownRecipient Kind = "unknown_recipient"
	// Delivered and DeliveryFailed: a recipient (Detail) of an account's
	// (User) message was accepted, or refused or bounced for good, by the
	// remote server; the accounts' bad-recipients signal counts these.
	Delivered      Kind = "delivered"
	DeliveryFailed Kind = "delivery_failed"
	Banned         Kind = "banned"
	Unbanned       Kind = "unbanned"
)

// Event is one observation about a client.
type Event struct {
	Time      time.Time  `json:"time"`
	Kind      Kind       `json:"kind"`
	Source    string     `json:"source"` // "smtpd", "postfix", "dovecot", "kernel", "policyd", "relayguard-log"
	IP        netip.Addr `json:"ip"`
	User      string     `json:"user,omitempty"`      // attempted or authenticated username, or uid name
	Mechanism string     `json:"mechanism,omitempty"` // SASL mechanism
	Rule      string     `json:"rule,omitempty"`      // rule that decided a rejection
	Detail    string     `json:"detail,omitempty"`    // free text: zone, recipient, command...
	Service   string     `json:"service,omitempty"`   // smtp, submission, imap, pop3...
	// Attempts is how many failed attempts an auth_failure stands for (a
	// login process's summary "auth failed, 3 attempts"); 0 means one.
	Attempts int `json:"attempts,omitempty"`
	// Session is the session id a log line names (Dovecot's "<…>"), which
	// tells the lines of one login apart from others of the same address.
	Session string `json:"session,omitempty"`
	// QueueID is the MTA's queue id the observation is about (Postfix's
	// "QUEUEID: client=…, sasl_username=…", a delivery line), if any.
	QueueID string `json:"queue_id,omitempty"`
}

// Count is how many attempts e stands for: Attempts, at least one.
func (e Event) Count() int { return max(e.Attempts, 1) }

// Sink receives events. Publish must not block for long.
type Sink interface {
	Publish(ctx context.Context, e Event)
}

// Discard drops every event.
type Discard struct{}

// Publish implements Sink.
func (Discard) Publish(context.Context, Event) {}

// Bus fans events out to subscribers. The zero value is ready to use.
type Bus struct {
	mu   sync.RWMutex
	subs []Sink
}

// Subscribe adds a sink.
func (b *Bus) Subscribe(s Sink) {
	b.mu.Lock()
	b.subs = append(b.subs, s)
	b.mu.Unlock()
}

// Publish implements Sink.
func (b *Bus) Publish(ctx context.Context, e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b.mu.RLock()
	subs := b.subs
	b.mu.RUnlock()
	for _, s := range subs {
		s.Publish(ctx, e)
	}
}

// Recorder keeps every event; for tests and replay.
type Recorder struct {
	mu     sync.Mutex
	Events []Event
}

// Publish implements Sink.
func (r *Recorder) Publish(_ context.Context, e Event) {
	r.mu.Lock()
	r.Events = append(r.Events, e)
	r.mu.Unlock()
}

// Snapshot returns a copy of the events so far.
func (r *Recorder) Snapshot() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.Events...)
}
