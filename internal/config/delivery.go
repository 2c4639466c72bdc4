package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/address"
)

// DeliveryConfig is the [delivery] section: the queue scheduler, outbound
// SMTP, local delivery, bounces and per-user send limits.
type DeliveryConfig struct {
	MaxQueueLifetime     Duration   `toml:"max_queue_lifetime" comment:"Give up on a recipient still undelivered after this long (Postfix maximal_queue_lifetime)."`
	RetrySchedule        []Duration `toml:"retry_schedule" comment:"Waits between delivery attempts of a temporarily failing recipient; the last one repeats."`
	Workers              int        `toml:"workers" comment:"Deliveries in progress at once, in total."`
	PerDomainConcurrency int        `toml:"per_domain_concurrency" comment:"Deliveries in progress at once to one destination: a domain's MX hosts, the smarthost, or a transport table target."`
	RescanInterval       Duration   `toml:"rescan_interval" comment:"How often the scheduler rereads the spool to pick up changes made by 'relayguard queue'."`
	HeloName             string     `toml:"helo_name" comment:"Name sent in EHLO. Empty: hostname."`
	ConnectTimeout       Duration   `toml:"connect_timeout" comment:"Time allowed to connect to one mail exchanger."`
	CommandTimeout       Duration   `toml:"command_timeout" comment:"Time allowed for each SMTP reply (RFC 5321 4.5.3.2: 5m)."`
	ConnectionCacheTime  Duration   `toml:"connection_cache_time" comment:"Keep an idle outbound SMTP connection this long for the next message to the same host. 0 disables reuse."`
	DNSServer            string     `toml:"dns_server" comment:"DNS server (host:port) for MX/A/AAAA lookups. Empty: the first nameserver of /etc/resolv.conf."`

	TLSPolicy   string            `toml:"tls_policy" comment:"Outbound STARTTLS policy: none, may (opportunistic), encrypt (TLS required, any certificate) or verify (TLS with a valid certificate for the MX name)."`
	TLSPolicies map[string]string `toml:"tls_policies" comment:"Per destination domain TLS policy, overriding tls_policy (e.g. \"example.com\" = \"verify\")."`
	MTASTS      bool              `toml:"mta_sts" comment:"Honour recipient domains' MTA-STS policies (RFC 8461): in enforce mode, only the policy's MX hosts,\nover TLS with a certificate valid for the MX name; testing mode only reports. Policies are cached in DATA_DIR/mta-sts."`
	DANE        bool              `toml:"dane" comment:"Honour DNSSEC-validated TLSA records of MX hosts, and of the smarthost and transport hosts named (RFC 7672):\nTLS required and the peer authenticated by them, failing closed. Needs dns_server to be a validating resolver you trust (unbound on this host): the AD bit is believed."`
	Chunking    bool              `toml:"chunking" comment:"Send messages with BDAT (RFC 3030 CHUNKING) to peers that offer it: no dot-stuffing, sizes known up front."`
	TLSReports  bool              `toml:"tls_reports" comment:"Send daily TLS reports (RFC 8460) to the domains whose _smtp._tls TXT record asks for them, about the\nsessions with their DANE or MTA-STS policies."`

	Smarthost             string `toml:"smarthost" comment:"Send all non-local mail through this relay (host:port), e.g. when the provider blocks port 25 (OP25B). Empty: deliver to each domain's MX."`
	SmarthostImplicitTLS  bool   `toml:"smarthost_implicit_tls" comment:"Connect to the smarthost with implicit TLS (port 465) instead of STARTTLS."`
	SmarthostUser         string `toml:"smarthost_user" comment:"AUTH username for the smarthost. Empty: no AUTH. AUTH is only ever sent over TLS."`
	SmarthostPasswordFile string `toml:"smarthost_password_file" comment:"File holding the smarthost AUTH password (first line)."`

	LocalTransport string            `toml:"local_transport" comment:"Transport for local_domains that have no transports entry (Postfix local_transport), same syntax as transports.\nThe default delivers to one Maildir per recipient under DATA_DIR/mail ({domain} and {local} are the recipient's).\nEmpty: mail for local domains without a transports entry stays queued."`
	Transports     map[string]string `toml:"transports" comment:"Transport table: domain -> smtp:host:port, lmtp:unix:/path, lmtp:host:port, maildir:/path or discard[:reason].\nA key \".example.com\" also matches subdomains; \"*\" matches every domain. Relative paths are under DATA_DIR.\nExample: \"example.com\" = \"lmtp:unix:/run/dovecot/lmtp\""`

	BounceFrom        string   `toml:"bounce_from" comment:"From: address of delivery status notifications. Empty: MAILER-DAEMON@hostname."`
	BounceTrusted     bool     `toml:"bounce_trusted" comment:"Also send failure notices to senders from mynetworks (they are the operator's own hosts). Authenticated and local senders always get one; senders on the MX listener never do (no backscatter)."`
	DelayNoticeAfter  Duration `toml:"delay_notice_after" comment:"Send a delayed-delivery notice (RFC 3464 action=delayed) once a recipient has waited this long. 0 disables."`
	BounceIncludeBody bool     `toml:"bounce_include_body" comment:"Return the full original message in failure notices instead of its header only."`

	RateLimits RateLimitConfig `toml:"rate_limits"`
}

// RateLimitConfig is [delivery.rate_limits]: per-user containment of a stolen
// account and per-IP / per-sender-domain limits for trusted-network senders.
// 0 disables a limit.
type RateLimitConfig struct {
	UserMessagesPerHour           int  `toml:"user_messages_per_hour" comment:"Messages one authenticated user may send per hour."`
	UserRecipientsPerDay          int  `toml:"user_recipients_per_day" comment:"Recipients one authenticated user may send to per day."`
	UserNewRecipientsPerDay       int  `toml:"user_new_recipients_per_day" comment:"Recipients never seen before from this user, per day (a stolen account mails strangers)."`
	UserNullSenderMessagesPerHour int  `toml:"user_null_sender_messages_per_hour" comment:"Messages with the null sender (MAIL FROM:<>) one authenticated user may send per hour (a stolen account sending bounce-shaped spam)."`
	LocalMessagesPerHour          int  `toml:"local_messages_per_hour" comment:"Messages one local user (uid) may submit per hour with sendmail (relayguard milter as non_smtpd_milters);\nbeyond it they go to Postfix's hold queue."`
	LocalRecipientsPerDay         int  `toml:"local_recipients_per_day" comment:"Recipients one local user (uid) may submit to per day with sendmail."`
	IPMessagesPerHour             int  `toml:"ip_messages_per_hour" comment:"Messages per hour from one trusted-network (mynetworks) client IP."`
	SenderDomainMessagesPerHour   int  `toml:"sender_domain_messages_per_hour" comment:"Messages per hour with one MAIL FROM domain from trusted-network clients."`
	SuspendOnLimit                bool `toml:"suspend_on_limit" comment:"When a user's limit bites, suspend the account and hold its queued mail until an operator releases it."`
}

// TLS policies for outbound SMTP.
const (
	TLSNone    = "none"
	TLSMay     = "may"
	TLSEncrypt = "encrypt"
	TLSVerify  = "verify"
)

func defaultDelivery() DeliveryConfig {
	return DeliveryConfig{
		MaxQueueLifetime: Duration(5 * 24 * time.Hour),
		RetrySchedule: []Duration{
			Duration(time.Minute), Duration(5 * time.Minute), Duration(15 * time.Minute),
			Duration(30 * time.Minute), Duration(time.Hour), Duration(2 * time.Hour), Duration(4 * time.Hour),
		},
		Workers:              100,
		PerDomainConcurrency: 20,
		RescanInterval:       Duration(30 * time.Second),
		ConnectTimeout:       Duration(30 * time.Second),
		CommandTimeout:       Duration(5 * time.Minute),
		ConnectionCacheTime:  Duration(2 * time.Second),
		TLSPolicy:            TLSMay,
		MTASTS:               true,
		DANE:                 true,
		TLSReports:           true,
		Chunking:             true,
		TLSPolicies:          map[string]string{},
		LocalTransport:       "maildir:mail/{domain}/{local}",
		Transports:           map[string]string{},
		RateLimits: RateLimitConfig{
			UserMessagesPerHour:           200,
			UserRecipientsPerDay:          2000,
			UserNewRecipientsPerDay:       500,
			UserNullSenderMessagesPerHour: 10,
			LocalMessagesPerHour:          100,
			LocalRecipientsPerDay:         1000,
			IPMessagesPerHour:             2000,
			SenderDomainMessagesPerHour:   2000,
		},
	}
}

func validTLSPolicy(p string) bool {
	switch p {
	case TLSNone, TLSMay, TLSEncrypt, TLSVerify:
		return true
	}
	return false
}

// ValidateTransport checks one transport table value and names the problem.
func ValidateTransport(v string) error {
	if v == "discard" || strings.HasPrefix(v, "discard:") {
		return nil // Postfix's discard(8): accept and drop, with an optional reason
	}
	kind, rest, ok := strings.Cut(v, ":")
	if !ok || rest == "" {
		return fmt.Errorf("want smtp:host:port, lmtp:unix:/path, lmtp:host:port, maildir:/path or discard[:reason]")
	}
	switch kind {
	case "smtp":
		return validHostPort(rest)
	case "lmtp":
		if p, ok := strings.CutPrefix(rest, "unix:"); ok {
			if p == "" {
				return fmt.Errorf("want lmtp:unix:/path/to/socket")
			}
			return nil
		}
		return validHostPort(rest)
	case "maildir":
		return nil
	}
	return fmt.Errorf("unknown transport %q: want smtp, lmtp or maildir", kind)
}

func validHostPort(s string) error {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	if h == "" {
		return fmt.Errorf("%q: empty host", s)
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: bad port %q", s, p)
	}
	return nil
}

func (c *DeliveryConfig) validate() error {
	if c.MaxQueueLifetime <= 0 {
		return fmt.Errorf("delivery.max_queue_lifetime %q: must be positive", c.MaxQueueLifetime.D())
	}
	if len(c.RetrySchedule) == 0 {
		return fmt.Errorf("delivery.retry_schedule is empty")
	}
	for i, d := range c.RetrySchedule {
		if d <= 0 {
			return fmt.Errorf("delivery.retry_schedule[%d] %q: must be positive", i, d.D())
		}
	}
	if c.Workers < 1 {
		return fmt.Errorf("delivery.workers %d: must be at least 1", c.Workers)
	}
	if c.PerDomainConcurrency < 1 {
		return fmt.Errorf("delivery.per_domain_concurrency %d: must be at least 1", c.PerDomainConcurrency)
	}
	if c.RescanInterval <= 0 {
		return fmt.Errorf("delivery.rescan_interval %q: must be positive", c.RescanInterval.D())
	}
	if c.ConnectTimeout <= 0 || c.CommandTimeout <= 0 {
		return fmt.Errorf("delivery.connect_timeout %q / command_timeout %q: must be positive", c.ConnectTimeout.D(), c.CommandTimeout.D())
	}
	if c.ConnectionCacheTime < 0 {
		return fmt.Errorf("delivery.connection_cache_time %q: must not be negative", c.ConnectionCacheTime.D())
	}
	if c.DNSServer != "" {
		if err := validHostPort(c.DNSServer); err != nil {
			return fmt.Errorf("delivery.dns_server: %w", err)
		}
	}
	if !validTLSPolicy(c.TLSPolicy) {
		return fmt.Errorf("delivery.tls_policy %q: want none, may, encrypt or verify", c.TLSPolicy)
	}
	for d, p := range c.TLSPolicies {
		if !validTLSPolicy(p) {
			return fmt.Errorf("delivery.tls_policies[%q] %q: want none, may, encrypt or verify", d, p)
		}
	}
	if c.Smarthost != "" {
		if err := validHostPort(c.Smarthost); err != nil {
			return fmt.Errorf("delivery.smarthost: %w", err)
		}
	}
	if c.SmarthostUser != "" && c.SmarthostPasswordFile == "" {
		return fmt.Errorf("delivery.smarthost_user %q needs delivery.smarthost_password_file", c.SmarthostUser)
	}
	if c.SmarthostUser != "" && c.Smarthost == "" {
		return fmt.Errorf("delivery.smarthost_user %q is set but delivery.smarthost is empty", c.SmarthostUser)
	}
	for d, t := range c.Transports {
		if d == "" {
			return fmt.Errorf("delivery.transports: empty domain key")
		}
		if err := ValidateTransport(t); err != nil {
			return fmt.Errorf("delivery.transports[%q] %q: %w", d, t, err)
		}
	}
	if c.LocalTransport != "" {
		if err := ValidateTransport(c.LocalTransport); err != nil {
			return fmt.Errorf("delivery.local_transport %q: %w", c.LocalTransport, err)
		}
	}
	if c.HeloName != "" {
		if _, err := address.CanonicalDomain(c.HeloName); err != nil {
			return fmt.Errorf("delivery.helo_name %q: want a domain name: %v", c.HeloName, err)
		}
	}
	if c.DelayNoticeAfter < 0 {
		return fmt.Errorf("delivery.delay_notice_after %q: must not be negative", c.DelayNoticeAfter.D())
	}
	r := c.RateLimits
	for _, l := range []struct {
		k string
		v int
	}{
		{"user_messages_per_hour", r.UserMessagesPerHour}, {"user_recipients_per_day", r.UserRecipientsPerDay},
		{"user_new_recipients_per_day", r.UserNewRecipientsPerDay}, {"ip_messages_per_hour", r.IPMessagesPerHour},
		{"user_null_sender_messages_per_hour", r.UserNullSenderMessagesPerHour},
		{"local_messages_per_hour", r.LocalMessagesPerHour}, {"local_recipients_per_day", r.LocalRecipientsPerDay},
		{"sender_domain_messages_per_hour", r.SenderDomainMessagesPerHour},
	} {
		if l.v < 0 {
			return fmt.Errorf("delivery.rate_limits.%s %d: must not be negative (0 disables)", l.k, l.v)
		}
	}
	return nil
}

// canonicalTables puts the domain keys of the per-domain tables of
// [delivery] in canonical form (see Site) and resolves the paths of maildir
// and LMTP socket transports against data_dir.
func (c *Config) canonicalTables() error {
	d := &c.Delivery
	pol := make(map[string]string, len(d.TLSPolicies))
	for k, v := range d.TLSPolicies {
		ck, err := CanonicalDomain(k)
		if err != nil {
			return fmt.Errorf("delivery.tls_policies key %q: want a domain name: %v", k, err)
		}
		pol[ck] = v
	}
	d.TLSPolicies = pol
	tr := make(map[string]string, len(d.Transports))
	for k, v := range d.Transports {
		ck := k
		if k != "*" {
			var err error
			if ck, err = CanonicalDomain(k); err != nil {
				return fmt.Errorf("delivery.transports key %q: want a domain name, .domain or *: %v", k, err)
			}
		}
		tr[ck] = c.resolveTransport(v)
	}
	d.Transports = tr
	d.LocalTransport = c.resolveTransport(d.LocalTransport)
	return nil
}

// resolveTransport resolves the path of a maildir or lmtp:unix transport.
func (c *Config) resolveTransport(t string) string {
	if p, ok := strings.CutPrefix(t, "maildir:"); ok && p != "" {
		return "maildir:" + c.Resolve(p)
	}
	if p, ok := strings.CutPrefix(t, "lmtp:unix:"); ok && p != "" {
		return "lmtp:unix:" + c.Resolve(p)
	}
	return t
}
