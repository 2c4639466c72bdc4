package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// AccountsConfig is the [accounts] section: the signals that an account has
// been taken over (or a local program hijacked), and the response. Each
// signal is on by default; a threshold of 0 turns it off.
type AccountsConfig struct {
	LoginSpreadNetworks int      `toml:"login_spread_networks" comment:"Login spread: an account that logs in successfully from more than this many distinct networks\n(IPv4 /login_spread_ipv4_bits, IPv6 /login_spread_ipv6_bits) within login_spread_window is taken over. 0 disables."`
	LoginSpreadWindow   Duration `toml:"login_spread_window"`
	LoginSpreadIPv4Bits int      `toml:"login_spread_ipv4_bits"`
	LoginSpreadIPv6Bits int      `toml:"login_spread_ipv6_bits"`

	GuessingAddresses int      `toml:"guessing_addresses" comment:"Distributed guessing: when more than this many addresses fail to log in as one username within guessing_window,\nthat username is refused from networks where it has not logged in successfully within known_network_age\n(its owner keeps logging in from where they did before). 0 disables."`
	GuessingWindow    Duration `toml:"guessing_window"`
	KnownNetworkAge   Duration `toml:"known_network_age"`

	VolumeFactor   float64  `toml:"volume_factor" comment:"Volume anomaly: an account sending more than volume_factor times its busiest hour of the last volume_baseline\n(and at least volume_minimum messages) within one hour. 0 disables."`
	VolumeMinimum  int      `toml:"volume_minimum"`
	VolumeBaseline Duration `toml:"volume_baseline"`

	BadRecipientShare   float64  `toml:"bad_recipient_share" comment:"Bad recipients: when at least this share of an account's recipients within bad_recipient_window were refused or\nbounced by the remote servers (a spam run hits dead addresses), and there were at least bad_recipient_minimum. 0 disables."`
	BadRecipientMinimum int      `toml:"bad_recipient_minimum"`
	BadRecipientWindow  Duration `toml:"bad_recipient_window"`

	Decoys       []string `toml:"decoys" comment:"Decoy usernames that no person uses: any AUTH attempt with one bans the source prefix at once\n(IPv4 /decoy_ban_ipv4_bits, IPv6 /decoy_ban_ipv6_bits, for decoy_ban_time). A name that is a real account (it\never logged in successfully, or is a relayguard user) is never treated as a decoy."`
	DecoyBanTime Duration `toml:"decoy_ban_time"`
	DecoyIPv4    int      `toml:"decoy_ban_ipv4_bits"`
	DecoyIPv6    int      `toml:"decoy_ban_ipv6_bits"`

	Suspend bool `toml:"suspend" comment:"On a signal (login spread, volume anomaly, bad recipients), suspend the account everywhere (serve refuses its\nAUTH, the policy service and the milter defer its mail, Dovecot's auth policy refuses it) and hold its queued mail.\nfalse: only log and alert."`

	AlertMailTo   string   `toml:"alert_mail_to" comment:"Mail an alert naming the account, the signal and the evidence to this address. Empty: no mail."`
	AlertMailFrom string   `toml:"alert_mail_from" comment:"From: of the alert mail. Empty: relayguard@hostname."`
	AlertSMTP     string   `toml:"alert_smtp" comment:"host:port of the SMTP server that takes the alert mail. Empty: serve queues it in its own spool;\nthe other commands send it to 127.0.0.1:25 (the local Postfix)."`
	WebhookURL    string   `toml:"webhook_url" comment:"POST a JSON alert to this http(s) URL as well. Empty: none."`
	Postsuper     string   `toml:"postsuper" comment:"postsuper(1), to hold (-h) and release (-H) the Postfix queue files tied to a suspended account."`
	PostfixConfig []string `toml:"postfix_config_directories" comment:"Postfix instances whose queues are held (postsuper -c DIR). Empty: none (no Postfix on this host)."`

	DovecotPolicyListen string `toml:"dovecot_policy_listen" comment:"Serve Dovecot's authentication policy (auth_policy_server_url) from \"relayguard watch\" on this host:port:\ndecoys banned before the password is checked, suspended accounts and guessed usernames from new networks refused,\nand every login reported. Empty: off."`
}

// Signal names, in logs, alerts, metrics and the suspension record.
const (
	SignalLoginSpread = "login_spread"
	SignalGuessing    = "distributed_guessing"
	SignalVolume      = "volume_anomaly"
	SignalBadRcpts    = "bad_recipients"
	SignalDecoy       = "decoy"
	SignalRateLimit   = "rate_limit"
	SignalManual      = "manual"
)

func defaultAccounts() AccountsConfig {
	return AccountsConfig{
		LoginSpreadNetworks: 8,
		LoginSpreadWindow:   Duration(time.Hour),
		LoginSpreadIPv4Bits: 16,
		LoginSpreadIPv6Bits: 32,
		GuessingAddresses:   10,
		GuessingWindow:      Duration(time.Hour),
		KnownNetworkAge:     Duration(30 * 24 * time.Hour),
		VolumeFactor:        10,
		VolumeMinimum:       100,
		VolumeBaseline:      Duration(14 * 24 * time.Hour),
		BadRecipientShare:   0.5,
		BadRecipientMinimum: 20,
		BadRecipientWindow:  Duration(24 * time.Hour),
		Decoys:              []string{"admin", "administrator", "test", "guest", "root", "oracle", "support", "webmaster"},
		DecoyBanTime:        Duration(24 * time.Hour),
		DecoyIPv4:           24,
		DecoyIPv6:           64,
		Suspend:             true,
		Postsuper:           "/usr/sbin/postsuper",
	}
}

func (c *AccountsConfig) validate() error {
	for _, b := range []struct {
		key       string
		v, lo, hi int
	}{
		{"login_spread_ipv4_bits", c.LoginSpreadIPv4Bits, 8, 32}, {"login_spread_ipv6_bits", c.LoginSpreadIPv6Bits, 16, 128},
		{"decoy_ban_ipv4_bits", c.DecoyIPv4, 8, 32}, {"decoy_ban_ipv6_bits", c.DecoyIPv6, 16, 128},
	} {
		if b.v < b.lo || b.v > b.hi {
			return fmt.Errorf("accounts.%s %d: want %d to %d", b.key, b.v, b.lo, b.hi)
		}
	}
	for _, n := range []struct {
		key string
		v   int
	}{{"login_spread_networks", c.LoginSpreadNetworks}, {"guessing_addresses", c.GuessingAddresses},
		{"volume_minimum", c.VolumeMinimum}, {"bad_recipient_minimum", c.BadRecipientMinimum}} {
		if n.v < 0 {
			return fmt.Errorf("accounts.%s %d: must not be negative (0 disables)", n.key, n.v)
		}
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"login_spread_window", c.LoginSpreadWindow}, {"guessing_window", c.GuessingWindow}, {"known_network_age", c.KnownNetworkAge},
		{"volume_baseline", c.VolumeBaseline}, {"bad_recipient_window", c.BadRecipientWindow}, {"decoy_ban_time", c.DecoyBanTime}} {
		if d.v <= 0 {
			return fmt.Errorf("accounts.%s %q: must be positive", d.key, d.v.D())
		}
	}
	if c.VolumeFactor < 0 {
		return fmt.Errorf("accounts.volume_factor %g: must not be negative (0 disables)", c.VolumeFactor)
	}
	if c.BadRecipientShare < 0 || c.BadRecipientShare > 1 {
		return fmt.Errorf("accounts.bad_recipient_share %g: want 0 (off) to 1", c.BadRecipientShare)
	}
	for i, d := range c.Decoys {
		if strings.TrimSpace(d) == "" {
			return fmt.Errorf("accounts.decoys[%d]: empty name", i)
		}
	}
	if c.AlertMailTo != "" && !strings.Contains(c.AlertMailTo, "@") {
		return fmt.Errorf("accounts.alert_mail_to %q: not an address", c.AlertMailTo)
	}
	if c.AlertSMTP != "" {
		if err := validHostPort(c.AlertSMTP); err != nil {
			return fmt.Errorf("accounts.alert_smtp: %w", err)
		}
	}
	if c.WebhookURL != "" {
		u, err := url.Parse(c.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("accounts.webhook_url %q: want an http:// or https:// URL", WebhookName(c.WebhookURL))
		}
	}
	if c.Postsuper != "" && !strings.HasPrefix(c.Postsuper, "/") {
		return fmt.Errorf("accounts.postsuper %q: must be an absolute path", c.Postsuper)
	}
	for i, d := range c.PostfixConfig {
		if !strings.HasPrefix(d, "/") {
			return fmt.Errorf("accounts.postfix_config_directories[%d] %q: must be an absolute path", i, d)
		}
	}
	if c.DovecotPolicyListen != "" {
		if err := validListenAddress(c.DovecotPolicyListen); err != nil {
			return fmt.Errorf("accounts.dovecot_policy_listen %q: %w", c.DovecotPolicyListen, err)
		}
	}
	return nil
}

// WebhookName names a webhook URL in errors and logs by its scheme and host
// alone: a webhook's path and query are commonly its secret (Slack's
// /services/T…/B…/TOKEN, Discord's /api/webhooks/ID/TOKEN, ?token=...), and
// its user information may hold a password. The path and query are shown as
// "/…" when present, so that the operator sees that something was left out.
func WebhookName(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL, not shown: it may hold a secret)"
	}
	if u.Scheme == "" || u.Host == "" {
		// "hooks.example.com/services/T/B/TOKEN" parses as a path.
		return "(not an absolute URL, not shown: it may hold a secret)"
	}
	name := u.Scheme + "://" + u.Host
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		name += "/…"
	}
	return name
}
