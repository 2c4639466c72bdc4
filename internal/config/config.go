// Package config holds relayguard's configuration: the TOML schema, the
// embedded defaults, and validation. The defaults are the "embedded default
// configuration" that `relayguard serve` runs on when no --config is given;
// `relayguard config print` renders the effective configuration as TOML with
// the comments from the `comment` struct tags below.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/relayguard/relayguard/internal/address"
	"github.com/relayguard/relayguard/internal/redact"
)

// Config is the whole configuration. Each area of relayguard owns one section.
type Config struct {
	Hostname        string   `toml:"hostname" comment:"Name used in the SMTP banner and EHLO reply. Empty: the machine's hostname."`
	DataDir         string   `toml:"data_dir" comment:"Directory for all state: database, spool, TLS certificate. Relative: to this file's directory. Overridden by --data-dir."`
	LocalDomains    []string `toml:"local_domains" comment:"Domains whose mailboxes live here (Postfix mydestination). Empty: localhost and the machine's hostname."`
	RelayDomains    []string `toml:"relay_domains" comment:"Domains accepted from anyone and relayed onward (Postfix relay_domains)."`
	MyNetworks      []string `toml:"mynetworks" comment:"Trusted networks allowed to relay without authentication (CIDR). Empty by default:\neven loopback must authenticate, since a compromised local script is the threat."`
	AllowIPLiterals bool     `toml:"allow_ip_literals" comment:"Treat recipient domains that are IP literals of this server ([192.0.2.1], [IPv6:...]) as local."`
	OwnAddresses    []string `toml:"own_addresses" comment:"This server's own IP addresses (for IP-literal recipients and never-ban lists). Empty: listener addresses and interface addresses."`
	SenderBinding   bool     `toml:"sender_binding" comment:"An authenticated user may only use its own addresses in MAIL FROM."`

	Log       LogConfig        `toml:"log"`
	Admin     AdminConfig      `toml:"admin"`
	TLS       TLSConfig        `toml:"tls"`
	Listeners []ListenerConfig `toml:"listener" comment:"SMTP listeners. mode is mx (port 25 role), submission (STARTTLS, AUTH required) or submissions (implicit TLS)."`
	Limits    LimitsConfig     `toml:"limits"`
	Auth      AuthConfig       `toml:"auth"`
	Store     StoreConfig      `toml:"store"`
	Spool     SpoolConfig      `toml:"spool"`

	Policy   PolicyConfig   `toml:"policy"`
	DNSBL    DNSBLConfig    `toml:"dnsbl"`
	Guard    GuardConfig    `toml:"guard"`
	Firewall FirewallConfig `toml:"firewall"`
	Delivery DeliveryConfig `toml:"delivery"`
	Milter   MilterConfig   `toml:"milter"`
	Accounts AccountsConfig `toml:"accounts"`
	Audit    AuditConfig    `toml:"audit"`
	Egress   EgressConfig   `toml:"egress"`
	Report   ReportConfig   `toml:"report"`
	DKIM     DKIMConfig     `toml:"dkim"`

	// Site is the canonical identity of this server, built by Finish.
	Site *Site `toml:"-"`

	// path is the file this configuration was read from ("" = embedded).
	path string
	// printed is the configuration as given, before Finish resolved it.
	printed []byte
}

// LogConfig selects the log/slog handler.
type LogConfig struct {
	Format string `toml:"format" comment:"text or json"`
	Level  string `toml:"level" comment:"debug, info, warn or error"`
}

// AdminConfig is the admin HTTP listener: metrics, health and the web
// console (internal/console, docs/console.md).
type AdminConfig struct {
	Listen  string `toml:"listen" comment:"Admin HTTP listener: /metrics (Prometheus), /healthz and the web console. Empty disables it."`
	Console bool   `toml:"console" comment:"Serve the web console and its JSON API (docs/console.md) on the admin listener. Log in with an admin\naccount made by \"relayguard admin add\" (not a mail account)."`
	TLS     string `toml:"tls" comment:"auto: HTTPS (with the [tls] certificate) when listen is not a loopback address, plain HTTP on loopback;\non: always HTTPS; off: never (refused while the console is served on a non-loopback address)."`
	// Sessions of the console.
	SessionIdle     Duration `toml:"session_idle" comment:"A console session unused this long ends."`
	SessionLifetime Duration `toml:"session_lifetime" comment:"A console session ends this long after the login, used or not."`
}

// HTTPS reports whether the admin listener serves HTTPS: tls = "on", or
// "auto" with a listen address that is not loopback.
func (a AdminConfig) HTTPS() bool {
	switch a.TLS {
	case "on":
		return true
	case "off":
		return false
	}
	return !LoopbackAddress(a.Listen)
}

// LoopbackAddress reports whether host:port names a loopback address
// ("localhost" included); a wildcard or any other host is not.
func LoopbackAddress(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// TLSConfig names the certificate used by every listener.
type TLSConfig struct {
	CertFile       string   `toml:"cert_file" comment:"PEM certificate chain. Empty: DATA_DIR/tls/cert.pem, self-signed on first start."`
	KeyFile        string   `toml:"key_file" comment:"PEM private key. Empty: DATA_DIR/tls/key.pem."`
	ReloadInterval Duration `toml:"reload_interval" comment:"How often cert_file and key_file are checked for a change (a certbot renewal), which is then in use\nwithout a restart. 0: only on SIGHUP."`
	ACME           bool     `toml:"acme" comment:"Obtain and renew the certificate from an ACME CA (RFC 8555, Let's Encrypt) for acme_names, kept in\nDATA_DIR/acme; cert_file/key_file serve until the first one is issued. See docs/msgauth.md."`
	ACMEDirectory  string   `toml:"acme_directory" comment:"ACME directory URL."`
	ACMEEmail      string   `toml:"acme_email" comment:"Contact address for the ACME account (expiry warnings). Empty: none."`
	ACMENames      []string `toml:"acme_names" comment:"Host names on the certificate. Empty: hostname."`
	ACMEChallenge  string   `toml:"acme_challenge" comment:"tls-alpn-01 (needs acme_listen on port 443) or http-01 (port 80)."`
	ACMEListen     string   `toml:"acme_listen" comment:"Address of the challenge listener. Empty: :443 for tls-alpn-01, :80 for http-01."`
	ACMECAFile     string   `toml:"acme_ca_file" comment:"PEM roots trusted for the ACME server's HTTPS (a private CA). Empty: the system roots."`
}

// Listener modes.
const (
	ModeMX          = "mx"
	ModeSubmission  = "submission"
	ModeSubmissions = "submissions"
)

// ListenerConfig is one SMTP listener.
type ListenerConfig struct {
	Name         string   `toml:"name"`
	Address      string   `toml:"address" comment:"host:port to listen on, or \"systemd:NAME\" for a socket passed by systemd socket activation."`
	Mode         string   `toml:"mode"`
	TrustedLocal bool     `toml:"trusted_local" comment:"Allow plaintext AUTH mechanisms without TLS on this listener (only for a trusted local listener)."`
	Allow        []string `toml:"allow" comment:"If set, only these client networks (CIDR) may connect (hosts.allow)."`
	Deny         []string `toml:"deny" comment:"Client networks (CIDR) refused before the banner (hosts.deny)."`
	// PROXY protocol (HAProxy's proxy-protocol.txt, v1 and v2).
	ProxyProtocol bool     `toml:"proxy_protocol" comment:"Connections start with a PROXY protocol header (v1 or v2) from a load balancer such as HAProxy: the\nclient address it gives is the one limits, bans, policy and logs see. Needs proxy_from."`
	ProxyFrom     []string `toml:"proxy_from" comment:"Networks (CIDR) of the load balancers allowed to send the PROXY header; connections from anywhere\nelse to this listener are closed (otherwise anyone could claim any address)."`

	// AllowNets, DenyNets and ProxyFromNets are Allow, Deny and ProxyFrom
	// parsed by Finish.
	AllowNets     []netip.Prefix `toml:"-"`
	DenyNets      []netip.Prefix `toml:"-"`
	ProxyFromNets []netip.Prefix `toml:"-"`
}

// LimitsConfig holds the per-session and per-server limits. Every limit logs
// when it bites.
type LimitsConfig struct {
	MaxMessageSize     int64    `toml:"max_message_size" comment:"SIZE limit in bytes (552 5.3.4 beyond it)."`
	MaxRecipients      int      `toml:"max_recipients" comment:"Recipients per message (452 4.5.3 beyond it)."`
	MaxLineLength      int      `toml:"max_line_length" comment:"Longest text line in DATA, CRLF included (RFC 5321 4.5.3.1.6: 1000)."`
	MaxCommandLength   int      `toml:"max_command_length" comment:"Longest command line, CRLF included (RFC 5321 4.5.3.1.4: 512; AUTH lines may be longer, up to 12288)."`
	MaxConnections     int      `toml:"max_connections" comment:"Concurrent SMTP connections in total."`
	MaxConnectionsIP   int      `toml:"max_connections_per_ip" comment:"Concurrent SMTP connections per client IP."`
	MaxConnectionsNet  int      `toml:"max_connections_per_net" comment:"Concurrent SMTP connections per client network (IPv4 /24, IPv6 /64)."`
	MaxBadCommands     int      `toml:"max_bad_commands" comment:"Errors per session before 421 and disconnect (Postfix smtpd_hard_error_limit): bad commands and every\ncommand a rule or a limit refused (relay denied, unknown recipient, policy reject)."`
	MaxJunkCommands    int      `toml:"max_junk_commands" comment:"NOOP, RSET, VRFY, HELP and EXPN commands per session before 421 (Postfix smtpd_junk_command_limit)."`
	MaxAuthFailures    int      `toml:"max_auth_failures" comment:"Failed AUTH attempts per session before 421 and disconnect."`
	GreetingDelay      Duration `toml:"greeting_delay" comment:"Wait this long before the banner and reject clients that talk first (pregreet). 0 disables."`
	CommandTimeout     Duration `toml:"command_timeout" comment:"Server timeout waiting for the next command (RFC 5321 4.5.3.2.7: 5m)."`
	DataBlockTimeout   Duration `toml:"data_block_timeout" comment:"Time allowed between two reads of message data (RFC 5321 4.5.3.2.5: 3m)."`
	AuthFailureDelay   Duration `toml:"auth_failure_delay" comment:"Base delay after a failed AUTH; doubles with each further failure in the session."`
	AuthResponseLength int      `toml:"max_auth_line_length" comment:"Longest SASL response line (RFC 4954 4: 12288 octets)."`
	SoftErrorLimit     int      `toml:"soft_error_limit" comment:"Errors in a session (bad commands, refused commands) after which each further error reply is delayed\n(Postfix smtpd_soft_error_limit); the n-th error beyond it waits n times error_delay, at most 10s."`
	ErrorDelay         Duration `toml:"error_delay" comment:"Delay unit for errors beyond soft_error_limit (Postfix smtpd_error_sleep_time). 0 disables."`
	UnknownRcptLimit   int      `toml:"unknown_recipient_limit" comment:"Unknown local recipients one client (IPv4 address, IPv6 /64) may try within unknown_recipient_window,\nall sessions together; beyond it every RCPT of the client gets 450 4.7.1 until the window has rolled on.\nAuthenticated and mynetworks clients are not counted. 0 disables."`
	UnknownRcptWindow  Duration `toml:"unknown_recipient_window" comment:"Rolling window of unknown_recipient_limit."`
	DataTimeout        Duration `toml:"data_timeout" comment:"Overall time allowed for message data, from the 354 reply to the final dot, extended by one second\nper min_data_rate bytes received (Postfix 3.7 smtpd_per_request_deadline with smtpd_min_data_rate);\npast it 421 4.4.2 and close."`
	MinDataRate        int64    `toml:"min_data_rate" comment:"Bytes per second of message data that extend data_timeout (Postfix smtpd_min_data_rate). 0: data_timeout is absolute."`
	CommandBudget      Duration `toml:"command_budget" comment:"Time a session may spend on commands from its start or from its last accepted message (message data\nnot counted); past it 421 4.4.2 and close, so that EHLO/NOOP tricklers cannot hold a connection. 0 disables."`
}

// AuthConfig configures SMTP AUTH (RFC 4954).
type AuthConfig struct {
	Mechanisms        []string `toml:"mechanisms" comment:"Mechanisms offered: PLAIN, LOGIN, SCRAM-SHA-256, SCRAM-SHA-256-PLUS, CRAM-MD5."`
	CRAMMD5           bool     `toml:"cram_md5" comment:"Enable CRAM-MD5. Stores a password-equivalent secret for every account: avoid."`
	BrokenAuthClients bool     `toml:"broken_auth_clients" comment:"Also advertise \"AUTH=...\" for old Outlook clients (Postfix broken_sasl_auth_clients)."`
	PasswordHash      string   `toml:"password_hash" comment:"argon2id or bcrypt"`
	HashMemory        int64    `toml:"hash_memory" comment:"Memory (bytes) concurrent password verifications may hold together (argon2id holds 19 MiB each);\na login beyond it waits for its turn, it does not fail. 0: automatic, 1/32 of the machine's memory\nbut at most one verification per CPU."`
	SCRAMIterations   int      `toml:"scram_iterations" comment:"PBKDF2 iterations for stored SCRAM-SHA-256 keys (at least 4096)."`
}

// StoreConfig selects the state store.
type StoreConfig struct {
	URL string `toml:"url" comment:"Shared state: empty for the embedded SQLite database, or redis://host:port/db for Redis/Valkey shared by several servers."`
}

// SpoolConfig configures the durable spool.
type SpoolConfig struct {
	Dir         string   `toml:"dir" comment:"Spool directory. Empty: DATA_DIR/spool."`
	GroupCommit Duration `toml:"group_commit" comment:"Longest wait to gather the messages of several sessions into one fdatasync of the intake journal (and one directory fsync). 0: sync as soon as one message waits."`
	MinFree     int64    `toml:"min_free" comment:"Free space (bytes) the spool's file system must keep: MAIL gets 452 4.3.1 Insufficient system storage\nwhen less than min_free plus 1.5 times the declared SIZE is free (Postfix queue_minfree)."`
}

// Default returns the embedded default configuration. Paths are relative to
// the data directory until Finish resolves them.
func Default() *Config {
	return &Config{
		DataDir:       "./relayguard-data",
		SenderBinding: true,
		Log:           LogConfig{Format: "text", Level: "info"},
		Admin: AdminConfig{Listen: "127.0.0.1:9025", Console: true, TLS: "auto", SessionIdle: Duration(30 * time.Minute),
			SessionLifetime: Duration(12 * time.Hour)},
		Listeners: []ListenerConfig{
			{Name: "mx", Address: "127.0.0.1:2525", Mode: ModeMX},
			{Name: "submission", Address: "127.0.0.1:5587", Mode: ModeSubmission},
			{Name: "submissions", Address: "127.0.0.1:5465", Mode: ModeSubmissions},
		},
		Limits: LimitsConfig{
			MaxMessageSize:     25 << 20,
			MaxRecipients:      100,
			MaxLineLength:      1000,
			MaxCommandLength:   512,
			MaxConnections:     20000,
			MaxConnectionsIP:   20,
			MaxConnectionsNet:  100,
			MaxBadCommands:     20,
			MaxJunkCommands:    100,
			MaxAuthFailures:    3,
			CommandTimeout:     Duration(5 * time.Minute),
			DataBlockTimeout:   Duration(3 * time.Minute),
			AuthFailureDelay:   Duration(1 * time.Second),
			AuthResponseLength: 12288,
			SoftErrorLimit:     10,
			ErrorDelay:         Duration(1 * time.Second),
			UnknownRcptLimit:   50,
			UnknownRcptWindow:  Duration(1 * time.Hour),
			DataTimeout:        Duration(5 * time.Minute),
			MinDataRate:        500,
			CommandBudget:      Duration(10 * time.Minute),
		},
		Auth: AuthConfig{
			Mechanisms:      []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN"},
			PasswordHash:    "argon2id",
			SCRAMIterations: 4096,
		},
		Spool:    SpoolConfig{GroupCommit: Duration(2 * time.Millisecond), MinFree: 64 << 20},
		Policy:   defaultPolicy(),
		DNSBL:    defaultDNSBL(),
		Guard:    defaultGuard(),
		Firewall: defaultFirewall(),
		Delivery: defaultDelivery(),
		Milter:   defaultMilter(),
		Accounts: defaultAccounts(),
		Audit:    defaultAudit(),
		Egress:   defaultEgress(),
		Report:   defaultReport(),
		DKIM:     defaultDKIM(),
		TLS:      defaultTLS(),
	}
}

// Load reads the TOML file at path over the defaults. An empty path gives the
// embedded defaults. Every error is one line naming the file, the key, the
// value and what is expected.
func Load(path string) (*Config, error) {
	c := Default()
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.path = path
	// Listeners given in the file replace the default listeners rather than
	// merging index by index.
	if bytes.Contains(b, []byte("[[listener]]")) || bytes.Contains(b, []byte("listener =")) {
		c.Listeners = nil
	}
	if err := decode(b, c); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Path is the file the configuration came from, or "" for the embedded one.
func (c *Config) Path() string { return c.path }

// where names the configuration in errors.
func (c *Config) where() string {
	if c.path == "" {
		return "config"
	}
	return "config " + c.path
}

// Finish makes the configuration canonical and validates it; components
// then read canonical values only. dataDir, if not empty, overrides
// data_dir (the --data-dir flag). Finish
//   - makes data_dir absolute — a relative one from a configuration file
//     against that file's directory, from --data-dir or the embedded
//     defaults against the working directory — and resolves every other
//     relative path in the configuration against it (tls.cert_file, spool.dir, maildir
//     transports, password files, access table files, log files, ...), so
//     that --data-dir moves all of them and the working directory (/ under
//     systemd) does not matter;
//   - fills the hostname and the default local domains;
//   - builds the Site: domains as IDNA A-labels, networks and the server's
//     own addresses parsed;
//   - canonicalises the domain keys of the per-domain tables.
//
// Marshal (config print) still renders the configuration as given, before
// this resolution, so that a saved copy does not pin derived paths.
func (c *Config) Finish(dataDir string) error {
	if err := c.finish(dataDir); err != nil {
		return fmt.Errorf("%s: %w", c.where(), err)
	}
	return c.Validate()
}

func (c *Config) finish(dataDir string) error {
	if dataDir != "" {
		c.DataDir = dataDir
	}
	if strings.TrimSpace(c.DataDir) == "" {
		return errors.New("data_dir is empty: want a directory for relayguard's state")
	}
	printed, err := c.encode()
	if err != nil {
		return err
	}
	c.printed = printed
	if dataDir == "" && c.path != "" && !filepath.IsAbs(c.DataDir) {
		// A relative data_dir read from a file is relative to that
		// file's directory, decided once here: not to the working
		// directory of whichever process reads the file, at whatever
		// time (systemd's /, a shell elsewhere, a reload).
		c.DataDir = filepath.Join(filepath.Dir(c.path), c.DataDir)
	}
	if c.DataDir, err = filepath.Abs(c.DataDir); err != nil {
		return fmt.Errorf("data_dir %q: %w", c.DataDir, err)
	}
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		if _, err := address.CanonicalDomain(h); err != nil {
			h = "localhost" // a machine name that is no domain name
		}
		c.Hostname = h
	}
	host, err := address.CanonicalDomain(c.Hostname)
	if err != nil {
		return fmt.Errorf("hostname %q: want a domain name such as mail.example.com: %v", c.Hostname, err)
	}
	c.Hostname = host
	if len(c.LocalDomains) == 0 {
		c.LocalDomains = []string{"localhost"}
		if host != "localhost" {
			c.LocalDomains = append(c.LocalDomains, host)
		}
	}
	if c.Site, err = c.buildSite(); err != nil {
		return err
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.AllowNets, err = ParsePrefixes(l.Allow); err != nil {
			return fmt.Errorf("listener %q allow: %w", l.Name, err)
		}
		if l.DenyNets, err = ParsePrefixes(l.Deny); err != nil {
			return fmt.Errorf("listener %q deny: %w", l.Name, err)
		}
		if l.ProxyFromNets, err = ParsePrefixes(l.ProxyFrom); err != nil {
			return fmt.Errorf("listener %q proxy_from: %w", l.Name, err)
		}
		if l.ProxyProtocol && len(l.ProxyFromNets) == 0 {
			return fmt.Errorf("listener %q: proxy_protocol needs proxy_from, the load balancers' networks", l.Name)
		}
	}
	c.resolvePaths()
	if err := c.DKIM.finish(c.DataDir); err != nil {
		return err
	}
	if err := c.TLS.finish(c); err != nil {
		return err
	}
	return c.canonicalTables()
}

// Resolve returns path resolved against the data directory: absolute paths
// and "" are returned as they are.
func (c *Config) Resolve(path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(c.DataDir, path)
}

// resolvePaths resolves every path of the configuration against data_dir.
func (c *Config) resolvePaths() {
	if c.TLS.CertFile == "" {
		c.TLS.CertFile = filepath.Join("tls", "cert.pem")
	}
	if c.TLS.KeyFile == "" {
		c.TLS.KeyFile = filepath.Join("tls", "key.pem")
	}
	if c.Spool.Dir == "" {
		c.Spool.Dir = "spool"
	}
	for _, p := range []*string{
		&c.TLS.CertFile, &c.TLS.KeyFile, &c.Spool.Dir,
		&c.Delivery.SmarthostPasswordFile, &c.Report.SMTPPasswordFile, &c.Egress.PersistDir,
	} {
		*p = c.Resolve(*p)
	}
	for i := range c.Policy.Access {
		c.Policy.Access[i].File = c.Resolve(c.Policy.Access[i].File)
	}
	c.Guard.Files = c.resolveAll(c.Guard.Files)
	c.Report.Logs = c.resolveAll(c.Report.Logs)
}

func (c *Config) resolveAll(list []string) []string {
	out := make([]string, len(list))
	for i, p := range list {
		out[i] = c.Resolve(p)
	}
	return out
}

// Validate checks the configuration and returns an error naming the first
// bad key, its value and what is expected.
func (c *Config) Validate() error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("%s: %w", c.where(), err)
	}
	return nil
}

func (c *Config) validate() error {
	for i, n := range c.MyNetworks {
		if _, err := ParsePrefix(n); err != nil {
			return fmt.Errorf("mynetworks[%d] %q: %w", i, n, err)
		}
	}
	for i, a := range c.OwnAddresses {
		if _, err := netip.ParseAddr(a); err != nil {
			return fmt.Errorf("own_addresses[%d] %q: %w", i, a, err)
		}
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format %q: want text or json", c.Log.Format)
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	if err := c.Admin.validate(); err != nil {
		return err
	}
	if len(c.Listeners) == 0 {
		return errors.New("listener: none configured: want at least one [[listener]]")
	}
	names := map[string]bool{}
	for i, l := range c.Listeners {
		if l.Name == "" {
			return fmt.Errorf("listener[%d].name is empty: want a name such as \"mx\"", i)
		}
		if names[l.Name] {
			return fmt.Errorf("listener[%d].name %q: duplicate name", i, l.Name)
		}
		names[l.Name] = true
		switch l.Mode {
		case ModeMX, ModeSubmission, ModeSubmissions:
		default:
			return fmt.Errorf("listener %q: mode %q: want mx, submission or submissions", l.Name, l.Mode)
		}
		if name, ok := strings.CutPrefix(l.Address, "systemd:"); ok {
			if name == "" {
				return fmt.Errorf("listener %q: address %q: want systemd:NAME with the socket's FileDescriptorName", l.Name, l.Address)
			}
		} else if err := validListenAddress(l.Address); err != nil {
			return fmt.Errorf("listener %q: address %q: %w", l.Name, l.Address, err)
		}
		for _, n := range append(append([]string{}, l.Allow...), l.Deny...) {
			if _, err := ParsePrefix(n); err != nil {
				return fmt.Errorf("listener %q: network %q: %w", l.Name, n, err)
			}
		}
	}
	if err := c.Limits.validate(); err != nil {
		return err
	}
	if err := c.Store.validate(); err != nil {
		return err
	}
	if c.Spool.GroupCommit.D() < 0 {
		return fmt.Errorf("spool.group_commit %s: must not be negative (0: sync as soon as one message waits)", c.Spool.GroupCommit.D())
	}
	if c.Spool.MinFree < 0 {
		return fmt.Errorf("spool.min_free %d: must not be negative (0: only the declared SIZE is checked)", c.Spool.MinFree)
	}
	if err := c.Auth.validate(); err != nil {
		return err
	}
	return c.validateSections()
}

// validListenAddress checks a host:port to listen on. Port 0 asks the
// kernel for a free port.
func (a *AdminConfig) validate() error {
	if a.Listen != "" {
		if err := validListenAddress(a.Listen); err != nil {
			return fmt.Errorf("admin.listen %q: %w", a.Listen, err)
		}
	}
	switch a.TLS {
	case "auto", "on":
	case "off":
		if a.Console && a.Listen != "" && !LoopbackAddress(a.Listen) {
			return fmt.Errorf("admin.tls = \"off\": the console would take passwords in clear text on %s; want \"auto\" or \"on\", a loopback admin.listen, or admin.console = false", a.Listen)
		}
	default:
		return fmt.Errorf("admin.tls %q: want auto, on or off", a.TLS)
	}
	if a.SessionIdle <= 0 || a.SessionLifetime <= 0 {
		return fmt.Errorf("admin.session_idle %s, admin.session_lifetime %s: want positive durations", a.SessionIdle.D(), a.SessionLifetime.D())
	}
	if a.SessionIdle > a.SessionLifetime {
		return fmt.Errorf("admin.session_idle %s is longer than admin.session_lifetime %s", a.SessionIdle.D(), a.SessionLifetime.D())
	}
	return nil
}

func validListenAddress(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port such as 127.0.0.1:25 or [::1]:25")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q: want a port from 1 to 65535", port)
	}
	return nil
}

func (l *LimitsConfig) validate() error {
	if l.MaxMessageSize < 1 {
		return fmt.Errorf("limits.max_message_size %d: must be at least 1", l.MaxMessageSize)
	}
	if l.MaxLineLength < 1000 {
		return fmt.Errorf("limits.max_line_length %d: RFC 5321 4.5.3.1.6 requires at least 1000", l.MaxLineLength)
	}
	if l.MaxCommandLength < 512 {
		return fmt.Errorf("limits.max_command_length %d: RFC 5321 4.5.3.1.4 requires at least 512", l.MaxCommandLength)
	}
	if l.MaxRecipients < 100 {
		// RFC 5321 4.5.3.1.8: at least 100 recipients must be buffered.
		return fmt.Errorf("limits.max_recipients %d: RFC 5321 4.5.3.1.8 requires at least 100", l.MaxRecipients)
	}
	if l.AuthResponseLength < 12288 {
		return fmt.Errorf("limits.max_auth_line_length %d: RFC 4954 4 requires at least 12288", l.AuthResponseLength)
	}
	for _, n := range []struct {
		key string
		v   int
	}{
		{"max_connections", l.MaxConnections}, {"max_connections_per_ip", l.MaxConnectionsIP},
		{"max_connections_per_net", l.MaxConnectionsNet}, {"max_bad_commands", l.MaxBadCommands},
		{"max_junk_commands", l.MaxJunkCommands}, {"max_auth_failures", l.MaxAuthFailures},
		{"soft_error_limit", l.SoftErrorLimit},
	} {
		if n.v < 1 {
			return fmt.Errorf("limits.%s %d: must be at least 1", n.key, n.v)
		}
	}
	for _, d := range []struct {
		key      string
		v        Duration
		positive bool
	}{
		{"greeting_delay", l.GreetingDelay, false}, {"command_timeout", l.CommandTimeout, true},
		{"data_block_timeout", l.DataBlockTimeout, true}, {"auth_failure_delay", l.AuthFailureDelay, false},
		{"error_delay", l.ErrorDelay, false}, {"unknown_recipient_window", l.UnknownRcptWindow, true},
		{"data_timeout", l.DataTimeout, true}, {"command_budget", l.CommandBudget, false},
	} {
		if d.positive && d.v <= 0 {
			return fmt.Errorf("limits.%s %q: must be positive", d.key, d.v.D())
		}
		if d.v < 0 {
			return fmt.Errorf("limits.%s %q: must not be negative", d.key, d.v.D())
		}
	}
	if l.UnknownRcptLimit < 0 {
		return fmt.Errorf("limits.unknown_recipient_limit %d: must not be negative (0 disables)", l.UnknownRcptLimit)
	}
	if l.MinDataRate < 0 {
		return fmt.Errorf("limits.min_data_rate %d: must not be negative (0: data_timeout is absolute)", l.MinDataRate)
	}
	return nil
}

func (s *StoreConfig) validate() error {
	if s.URL == "" {
		return nil
	}
	// The URL may hold a password: name it redacted.
	u, err := url.Parse(s.URL)
	if err != nil {
		return errors.New("store.url (unparsable, not shown: it may hold a password): want redis://[:password@]host:port/db, rediss://... or unix:///path")
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
		return nil
	}
	return fmt.Errorf("store.url %q: want empty (embedded SQLite), redis://[:password@]host:port/db, rediss://... or unix:///path", redact.URL(s.URL))
}

func (a *AuthConfig) validate() error {
	known := map[string]bool{"PLAIN": true, "LOGIN": true, "SCRAM-SHA-256": true, "SCRAM-SHA-256-PLUS": true, "CRAM-MD5": true}
	cram := false
	for _, m := range a.Mechanisms {
		if !known[strings.ToUpper(m)] {
			return fmt.Errorf("auth.mechanisms %q: want PLAIN, LOGIN, SCRAM-SHA-256, SCRAM-SHA-256-PLUS or CRAM-MD5", m)
		}
		if strings.EqualFold(m, "CRAM-MD5") {
			cram = true
		}
	}
	if cram && !a.CRAMMD5 {
		return errors.New("auth.mechanisms lists CRAM-MD5 but auth.cram_md5 is false: set cram_md5 = true to store the secrets it needs")
	}
	if a.CRAMMD5 && !cram {
		return errors.New("auth.cram_md5 = true but auth.mechanisms does not list CRAM-MD5: it would store password-equivalent secrets for a mechanism never offered; add \"CRAM-MD5\" to auth.mechanisms or set cram_md5 = false")
	}
	switch a.PasswordHash {
	case "argon2id", "bcrypt":
	default:
		return fmt.Errorf("auth.password_hash %q: want argon2id or bcrypt", a.PasswordHash)
	}
	if a.SCRAMIterations < 4096 {
		return fmt.Errorf("auth.scram_iterations %d: must be at least 4096", a.SCRAMIterations)
	}
	if a.HashMemory < 0 {
		return fmt.Errorf("auth.hash_memory %d: must not be negative (0: automatic)", a.HashMemory)
	}
	return nil
}

// Marshal renders the configuration as commented TOML.
// After Finish it renders the configuration as it was given (defaults,
// file and --data-dir), not the resolved values: relative paths stay
// relative to data_dir and empty values keep their documented defaults.
func (c *Config) Marshal() ([]byte, error) {
	body := c.printed
	if body == nil {
		var err error
		if body, err = c.encode(); err != nil {
			return nil, err
		}
	}
	header := "# relayguard configuration. Generated by `relayguard config print`;\n# save it, edit it, and pass it with --config FILE.\n\n"
	return append([]byte(header), body...), nil
}

func (c *Config) encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(false)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("config: marshal: %w", err)
	}
	return buf.Bytes(), nil
}

// ParsePrefix parses a CIDR or a bare address (as a /32 or /128). An
// IPv4-mapped address or prefix (::ffff:192.0.2.0/120) is the IPv4 one
// (192.0.2.0/24): every address looked up in a prefix table (the guard's
// bans, never-ban lists, mynetworks, access maps) is unmapped first, so a
// mapped prefix would match nothing — a ban that bans nobody, a never-ban
// entry that protects nobody — and would slip past the never-ban check
// (::ffff:127.0.0.0/104 does not overlap 127.0.0.0/8).
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// ParsePrefixes parses a list with ParsePrefix, naming the bad entry.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("network %q: %w", s, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// Duration is a time.Duration that reads and writes as a TOML string ("5m").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler; it also accepts "Nd" days.
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	if strings.HasSuffix(s, "d") {
		var n int
		if _, err := fmt.Sscanf(s, "%dd", &n); err == nil {
			// time.Duration holds ±292 years: a larger count of days
			// wrapped around ("213504d" was 25 minutes, "300000d" 236
			// years, "106752d" negative). time.ParseDuration refuses its
			// own overflows; so is this one.
			if max := int(math.MaxInt64 / int64(24*time.Hour)); n > max || n < -max {
				return fmt.Errorf("duration %q: out of range (at most %dd)", s, max)
			}
			*d = Duration(time.Duration(n) * 24 * time.Hour)
			return nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// RequireDataDir checks that the data directory of a finished configuration
// exists, creating it when create is set. Commands that read or write state
// (all but serve, which creates it) call it, so that running one in the
// wrong working directory says so instead of starting on a new, empty
// ./relayguard-data.
func (c *Config) RequireDataDir(create bool) error {
	fi, err := os.Stat(c.DataDir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("data directory %s is not a directory", c.DataDir)
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("data directory: %w", err)
	case create:
		if err := os.MkdirAll(c.DataDir, 0o750); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		return nil
	}
	return fmt.Errorf("data directory %s does not exist: run in the directory that holds relayguard-data, name it with --data-dir (or data_dir in --config), or pass --create-data-dir to create it", c.DataDir)
}
