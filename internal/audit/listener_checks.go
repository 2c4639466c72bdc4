package audit

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/relayguard/relayguard/internal/relaytest"
)

// pfCmd is the command line of a Postfix command (postconf, postfix,
// postmap) for the instance in dir: -c DIR unless it is the default one.
func pfCmd(cmd, dir string) string {
	if dir == "" || dir == "/etc/postfix" {
		return cmd
	}
	return cmd + " -c " + dir
}

func postconfCmd(dir string) string { return pfCmd("postconf", dir) }
func postfixCmd(dir string) string  { return pfCmd("postfix", dir) }
func postmapCmd(dir string) string  { return pfCmd("postmap", dir) }

// stopFix is the fix for an SMTP server nobody should be running.
func stopFix(l *Listener) string {
	if l.Remote != "" {
		return fmt.Sprintf("on %s: close the relay (require AUTH or reject_unauth_destination, trust only the host in mynetworks), or stop the server; then run relayguard audit there", l.Remote)
	}
	var pids []string
	for _, pid := range l.pids {
		pids = append(pids, strconv.Itoa(pid))
	}
	return fmt.Sprintf("stop it (kill %s) and disable whatever starts it (systemctl disable --now UNIT, crontab, rc.local), or bind it to 127.0.0.1", strings.Join(pids, " "))
}

// listenerFindings turns what the probe and the battery saw into findings.
func (r *run) listenerFindings(l *Listener) {
	subj := l.Describe()
	if l.Remote == "" && !knownMTA(l) {
		ev := []string{}
		for _, p := range l.Programs {
			ev = append(ev, fmt.Sprintf("%s (pid %s) runs as %s (uid %d): %s", p.Exe, joinInts(p.PIDs), p.User, p.UID, p.Cmdline))
		}
		if l.Probe != nil {
			ev = append(ev, "banner: "+l.Probe.Banner.String())
		}
		r.add(Finding{Check: "listener.unexpected-mta", Area: AreaListeners, Severity: Medium, Subject: subj,
			Title:    "an SMTP server that is neither Postfix nor relayguard is listening (a forgotten MTA is how hosts become springboards)",
			Evidence: ev, Fix: stopFix(l)})
	}
	if l.Probe == nil {
		if l.Role != "other" {
			ev := []string{}
			for _, rr := range l.Relay {
				ev = append(ev, rr.Target+" from "+rr.View+": "+rr.Untestable)
			}
			r.add(Finding{Check: "listener.no-smtp", Area: AreaListeners, Severity: Info, Subject: subj,
				Title: "listening on an SMTP port but did not answer as an SMTP server to the audit", Evidence: ev,
				Fix: "check what it is; if it should not be reachable, stop it or firewall the port"})
		}
		r.relayFindings(l, subj)
		return
	}
	p := l.Probe
	r.relayFindings(l, subj)
	// AUTH before TLS (RFC 4954 4: a server should not offer plaintext
	// mechanisms without TLS; RFC 3207 5).
	if len(p.AuthPlain) > 0 {
		plain := slices.ContainsFunc(p.AuthPlain, func(m string) bool { return m == "PLAIN" || m == "LOGIN" })
		f := Finding{Check: "listener.auth-before-tls", Area: AreaListeners, Severity: Medium, Subject: subj,
			Title:    "AUTH is offered before TLS",
			Evidence: []string{"EHLO without TLS offers AUTH " + strings.Join(p.AuthPlain, " ")}}
		if plain {
			f.Check, f.Severity = "listener.plaintext-auth", High
			f.Title = "passwords can be sent in clear: PLAIN/LOGIN offered before TLS"
		}
		switch {
		case l.PostfixConfig != "":
			f.Fix = fmt.Sprintf("%s -e 'smtpd_tls_auth_only = yes' && %s reload", postconfCmd(l.PostfixConfig), postfixCmd(l.PostfixConfig))
			if l.Role == "submission" {
				f.Fix = fmt.Sprintf("%s -P 'submission/inet/smtpd_tls_auth_only=yes' && %s reload", postconfCmd(l.PostfixConfig), postfixCmd(l.PostfixConfig))
			}
		case l.Relayguard:
			f.Fix = "set trusted_local = false on this listener in relayguard.toml (plaintext mechanisms then wait for STARTTLS) and restart relayguard"
		default:
			f.Fix = "configure the server to offer AUTH only after STARTTLS"
		}
		r.add(f)
	}
	var weak []string
	for _, m := range append(slices.Clone(p.AuthPlain), p.AuthTLS...) {
		if (m == "CRAM-MD5" || m == "DIGEST-MD5") && !slices.Contains(weak, m) {
			weak = append(weak, m)
		}
	}
	if len(weak) > 0 {
		fix := "remove CRAM-MD5 and DIGEST-MD5 from the mechanisms the SASL server offers (Dovecot: auth_mechanisms = plain login; Cyrus: mech_list: plain login)"
		if l.Relayguard {
			fix = `remove "CRAM-MD5" from [auth] mechanisms in relayguard.toml; then give each account a new password (relayguard user passwd NAME) so that no CRAM-MD5 secret stays stored`
		}
		r.add(Finding{Check: "listener.weak-auth-mechanisms", Area: AreaListeners, Severity: Medium, Subject: subj,
			Title:    "obsolete challenge-response mechanisms offered: the server must store password-equivalent secrets (DIGEST-MD5 is historic, RFC 6331)",
			Evidence: []string{"AUTH " + strings.Join(weak, " ")}, Fix: fix})
	}
	// VRFY confirms an address with 250/251 (RFC 5321 3.5.3), or, as
	// Postfix does, with 252 for an address it has and 550 for one it has
	// not (252 alone means "cannot verify, will try": no confirmation).
	vrfyTells := p.VRFY.Code == 252 && p.VRFYUnknown.Code/100 == 5
	for _, v := range []struct {
		cmd      string
		reply    relaytest.Reply
		evidence []string
	}{
		{"VRFY", p.VRFY, []string{"VRFY postmaster → " + p.VRFY.String(), "VRFY of an unknown user → " + p.VRFYUnknown.String()}},
		{"EXPN", p.EXPN, []string{"EXPN postmaster → " + p.EXPN.String()}},
	} {
		if v.reply.Code == 250 || v.reply.Code == 251 || v.cmd == "VRFY" && vrfyTells {
			fix := "disable the command"
			if l.PostfixConfig != "" {
				fix = fmt.Sprintf("%s -e 'disable_vrfy_command = yes' && %s reload", postconfCmd(l.PostfixConfig), postfixCmd(l.PostfixConfig))
			}
			r.add(Finding{Check: "listener." + strings.ToLower(v.cmd), Area: AreaListeners, Severity: Low, Subject: subj,
				Title:    v.cmd + " confirms addresses: spammers harvest valid recipients with it",
				Evidence: v.evidence, Fix: fix})
		}
	}
	if !p.STARTTLS && !l.ImplicitTLS && l.Role != "other" {
		r.add(Finding{Check: "listener.no-tls", Area: AreaListeners, Severity: Medium, Subject: subj,
			Title:    "no STARTTLS: mail and any login cross the network in clear",
			Evidence: []string{"EHLO keywords: " + strings.Join(p.Extensions, ", ")},
			Fix:      "configure a certificate (Postfix: smtpd_tls_cert_file, smtpd_tls_key_file, smtpd_tls_security_level = may)"})
	}
	if p.TLSError != "" {
		r.add(Finding{Check: "listener.tls-broken", Area: AreaListeners, Severity: Medium, Subject: subj,
			Title: "STARTTLS is offered but fails", Evidence: []string{p.TLSError},
			Fix: "check the certificate and key the server is configured with and its log"})
	}
	if (l.Role == "submission" || l.Role == "submissions") && p.NoAuthRcpt.Code/100 == 2 {
		fix := "require AUTH on the submission port"
		if l.PostfixConfig != "" {
			fix = fmt.Sprintf("%s -P 'submission/inet/smtpd_client_restrictions=permit_sasl_authenticated,reject' 'submission/inet/smtpd_sasl_auth_enable=yes' && %s reload", postconfCmd(l.PostfixConfig), postfixCmd(l.PostfixConfig))
			if l.Role == "submissions" {
				fix = strings.ReplaceAll(fix, "submission/inet", "submissions/inet")
			}
		}
		r.add(Finding{Check: "listener.open-submission", Area: AreaListeners, Severity: High, Subject: subj,
			Title:    "the submission port takes mail without AUTH",
			Evidence: []string{fmt.Sprintf("MAIL FROM:<%s> RCPT TO:<%s> without AUTH → %s", relaytest.DefaultFrom, p.LocalRcpt, p.NoAuthRcpt)},
			Fix:      fix})
	}
}

// relayFindings reads the battery runs.
func (r *run) relayFindings(l *Listener, subj string) {
	for _, rr := range l.Relay {
		if rr.Outcome != "open" {
			if rr.Outcome == "untestable" || rr.Outcome == "" && rr.Untestable != "" {
				r.problem(AreaListeners, "relay "+rr.Target, fmt.Errorf("%s: %s", subj, rr.Untestable))
			}
			continue
		}
		f := Finding{Area: AreaListeners, Subject: subj,
			Evidence: []string{fmt.Sprintf("%d of %d relay tests to %s from %s were accepted: %s", len(rr.Accepted), rr.Tests, rr.Target, rr.View, list(rr.Accepted, 6))}}
		switch {
		case rr.View == "outside":
			f.Check, f.Severity = "listener.open-relay", Critical
			f.Title = "OPEN RELAY: anyone on the Internet can send mail through this server"
		case rr.View == "remote":
			f.Check, f.Severity = "listener.open-relay", Critical
			f.Title = "OPEN RELAY: the remote server relays for this host without AUTH (unless this host is in its mynetworks, anyone can)"
		case loopbackTarget(rr.Target):
			f.Check, f.Severity = "listener.local-relay", Medium
			f.Title = "relays for any program on this host without AUTH: a compromised script sends through it, past the egress lockdown"
		default:
			f.Check, f.Severity = "listener.relay-from-host", High
			f.Title = "relays for this host's own address without AUTH (no outside view: it may relay for others too)"
		}
		switch {
		case l.PostfixConfig != "":
			f.Fix = fmt.Sprintf("%s -e 'smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination' 'mynetworks = 127.0.0.0/8 [::1]/128' && %s reload (see the postfix findings of %s for the cause)",
				postconfCmd(l.PostfixConfig), postfixCmd(l.PostfixConfig), l.PostfixConfig)
		case l.Relayguard:
			f.Fix = "remove the networks that are not this host from mynetworks in relayguard.toml and restart relayguard (see the relayguard findings)"
		default:
			f.Fix = stopFix(l)
		}
		r.add(f)
	}
}

func loopbackTarget(t string) bool {
	ap, err := netip.ParseAddrPort(t)
	return err == nil && ap.Addr().IsLoopback()
}

func joinInts(ns []int) string {
	var s []string
	for _, n := range ns {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}

// programNames lists the programs of a listener for evidence.
func programNames(l *Listener) string {
	var s []string
	for _, p := range l.Programs {
		s = append(s, filepath.Base(p.Exe)+"("+p.User+")")
	}
	return strings.Join(s, " ")
}
