package accounts

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"time"

	"github.com/relayguard/relayguard/internal/event"
)

// DovecotPolicy serves Dovecot's authentication policy protocol
// (auth_policy_server_url; doc.dovecot.org "Authentication Policy"):
// Dovecot POSTs a JSON object built from auth_policy_request_attributes to
// URL?command=allow before (and after) checking the password, and to
// URL?command=report after, with "success" added; the answer is
// {"status": S, "msg": M}, S = -1 refusing the login, 0 allowing it (a
// positive S would tarpit it for S seconds).
//
// It is how relayguard guards a Postfix/Dovecot host before the password
// is checked, as serve does itself: a decoy username bans its source
// network at once; a suspended account, and a username under distributed
// guessing from a network it never logged in from, are refused whatever
// the password. Every reported login goes to the detector: successes make
// networks known and count towards the login spread, failures count towards
// distributed guessing. Dovecot handles Postfix's SASL (smtpd_sasl_type =
// dovecot) too, so this covers SMTP AUTH as well as IMAP and POP3.
//
// Dovecot side (dovecot.conf):
//
//	auth_policy_server_url = http://127.0.0.1:10033/
//	auth_policy_hash_nonce = any-random-string
//	auth_policy_request_attributes = login=%{requested_username} remote=%{rip} protocol=%s
type DovecotPolicy struct {
	S *Service
	// Events also receives the reported logins (for the guard, when it
	// does not read Dovecot's log); nil: only the detector.
	Events event.Sink
}

type dovecotRequest struct {
	Login    string `json:"login"`
	Remote   string `json:"remote"`
	Protocol string `json:"protocol"`
	Success  *bool  `json:"success"`
	Rejected bool   `json:"policy_reject"`
}

type dovecotReply struct {
	Status int    `json:"status"`
	Msg    string `json:"msg"`
}

// ServeHTTP implements http.Handler.
func (p DovecotPolicy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var req dovecotRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		p.S.o.Log.Slog().Warn("accounts: dovecot policy request malformed", "err", err)
		http.Error(w, "malformed JSON", http.StatusBadRequest)
		return
	}
	ip, _ := netip.ParseAddr(req.Remote)
	ip = ip.Unmap()
	ctx := r.Context()
	reply := dovecotReply{}
	switch r.URL.Query().Get("command") {
	case "allow":
		reply = p.allow(ctx, req, ip)
	case "report":
		p.report(ctx, req, ip)
	default:
		http.Error(w, "command must be allow or report", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(reply)
}

// allow decides before (and after) Dovecot checks the password.
func (p DovecotPolicy) allow(ctx context.Context, req dovecotRequest, ip netip.Addr) dovecotReply {
	if req.Login == "" {
		return dovecotReply{}
	}
	d := p.S.Detector
	if d.IsDecoy(req.Login) && ip.IsValid() {
		d.Failure(ctx, req.Login, ip, p.S.o.Now())
		return dovecotReply{Status: -1, Msg: "Authentication failed"}
	}
	if ok, why := p.S.Gate.AuthAllowed(ctx, req.Login, ip); !ok {
		p.S.o.Log.Slog().Warn("accounts: login refused before its password was checked", "user", req.Login, "client", ip.String(), "protocol", req.Protocol, "reason", why)
		// The same answer as a wrong password: a guesser learns nothing.
		return dovecotReply{Status: -1, Msg: "Authentication failed"}
	}
	return dovecotReply{}
}

// report hands a finished login to the detector (and Events).
func (p DovecotPolicy) report(ctx context.Context, req dovecotRequest, ip netip.Addr) {
	if req.Login == "" || !ip.IsValid() || req.Success == nil || req.Rejected {
		return
	}
	e := event.Event{Time: p.S.o.Now(), Kind: event.AuthFailure, Source: "dovecot-policy", IP: ip, User: req.Login, Service: req.Protocol}
	if *req.Success {
		e.Kind = event.AuthSuccess
	}
	p.S.Detector.Publish(ctx, e)
	if p.Events != nil {
		p.Events.Publish(ctx, e)
	}
}

// Server returns the HTTP server for p on a listener the caller opens.
func (p DovecotPolicy) Server() *http.Server {
	return &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
}
