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
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Config is the whole configuration. Each area of relayguard owns one section.
type Config struct {
	Hostname        string   `toml:"hostname" comment:"Name used in the SMTP banner and EHLO reply. Empty: the machine's hostname."`
	DataDir         string   `toml:"data_dir" comment:"Directory for all state: database, spool, TLS certificate. Overridden by --data-dir."`
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
	Egress   EgressConfig   `toml:"egress"`
	Report   ReportConfig   `toml:"report"`
	DKIM     DKIMConfig     `toml:"dkim"`

	// path is the file this configuration was read from ("" = embedded).
	path string
}

// LogConfig selects the log/slog handler.
type LogConfig struct {
	Format string `toml:"format" comment:"text or json"`
	Level  string `toml:"level" comment:"debug, info, warn or error"`
}

// AdminConfig is the admin/metrics HTTP listener.
type AdminConfig struct {
	Listen string `toml:"listen" comment:"Admin HTTP listener: /metrics (Prometheus) and /healthz. Empty disables it."`
}

// TLSConfig names the certificate used by every listener.
type TLSConfig struct {
	CertFile string `toml:"cert_file" comment:"PEM certificate chain. Empty: DATA_DIR/tls/cert.pem, self-signed on first start."`
	KeyFile  string `toml:"key_file" comment:"PEM private key. Empty: DATA_DIR/tls/key.pem."`
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
	MaxBadCommands     int      `toml:"max_bad_commands" comment:"Bad commands per session before 421 and disconnect (Postfix smtpd_hard_error_limit)."`
	MaxJunkCommands    int      `toml:"max_junk_commands" comment:"NOOP, RSET, VRFY, HELP and EXPN commands per session before 421 (Postfix smtpd_junk_command_limit)."`
	MaxAuthFailures    int      `toml:"max_auth_failures" comment:"Failed AUTH attempts per session before 421 and disconnect."`
	GreetingDelay      Duration `toml:"greeting_delay" comment:"Wait this long before the banner and reject clients that talk first (pregreet). 0 disables."`
	CommandTimeout     Duration `toml:"command_timeout" comment:"Server timeout waiting for the next command (RFC 5321 4.5.3.2.7: 5m)."`
	DataBlockTimeout   Duration `toml:"data_block_timeout" comment:"Time allowed between two reads of message data (RFC 5321 4.5.3.2.5: 3m)."`
	AuthFailureDelay   Duration `toml:"auth_failure_delay" comment:"Base delay after a failed AUTH; doubles with each further failure in the session."`
	AuthResponseLength int      `toml:"max_auth_line_length" comment:"Longest SASL response line (RFC 4954 4: 12288 octets)."`
}

// AuthConfig configures SMTP AUTH (RFC 4954).
type AuthConfig struct {
	Mechanisms        []string `toml:"mechanisms" comment:"Mechanisms offered: PLAIN, LOGIN, SCRAM-SHA-256, SCRAM-SHA-256-PLUS, CRAM-MD5."`
	CRAMMD5           bool     `toml:"cram_md5" comment:"Enable CRAM-MD5. Stores a password-equivalent secret for every account: avoid."`
	BrokenAuthClients bool     `toml:"broken_auth_clients" comment:"Also advertise \"AUTH=...\" for old Outlook clients (Postfix broken_sasl_auth_clients)."`
	PasswordHash      string   `toml:"password_hash" comment:"argon2id or bcrypt"`
	SCRAMIterations   int      `toml:"scram_iterations" comment:"PBKDF2 iterations for stored SCRAM-SHA-256 keys (at least 4096)."`
}

// StoreConfig selects the state store.
type StoreConfig struct {
	URL string `toml:"url" comment:"Shared state: empty for the embedded SQLite database, or redis://host:port/db for Redis/Valkey shared by several servers."`
}

// SpoolConfig configures the durable spool.
type SpoolConfig struct {
	Dir         string   `toml:"dir" comment:"Spool directory. Empty: DATA_DIR/spool."`
	GroupCommit Duration `toml:"group_commit" comment:"Longest wait to batch the directory fsync of several messages into one. 0: fsync each message alone."`
}

// Default returns the embedded default configuration. Paths are relative to
// the data directory until Finish resolves them.
func Default() *Config {
	return &Config{
		DataDir:       "./relayguard-data",
		SenderBinding: true,
		Log:           LogConfig{Format: "text", Level: "info"},
		Admin:         AdminConfig{Listen: "127.0.0.1:9025"},
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
		},
		Auth: AuthConfig{
			Mechanisms:      []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN"},
			PasswordHash:    "argon2id",
			SCRAMIterations: 4096,
		},
		Spool:    SpoolConfig{GroupCommit: Duration(2 * time.Millisecond)},
		Policy:   defaultPolicy(),
		DNSBL:    defaultDNSBL(),
		Guard:    defaultGuard(),
		Firewall: defaultFirewall(),
		Delivery: defaultDelivery(),
		Egress:   defaultEgress(),
		Report:   defaultReport(),
		DKIM:     defaultDKIM(),
	}
}

// Load reads the TOML file at path over the defaults. An empty path gives the
// embedded defaults. Unknown keys are errors naming the key.
func Load(path string) (*Config, error) {
	c := Default()
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	// Listeners given in the file replace the default listeners rather than
	// merging index by index.
	if bytes.Contains(b, []byte("[[listener]]")) {
		c.Listeners = nil
	}
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) {
			return nil, fmt.Errorf("config %s: %s", path, sm.String())
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("config %s:%d:%d: %s", path, row, col, de.Error())
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	c.path = path
	return c, nil
}

// Path is the file the configuration came from, or "" for the embedded one.
func (c *Config) Path() string { return c.path }

// Finish fills derived defaults (hostname, local domains, file paths under
// the data directory) and validates. dataDir, if not empty, overrides
// data_dir (the --data-dir flag).
func (c *Config) Finish(dataDir string) error {
	if dataDir != "" {
		c.DataDir = dataDir
	}
	if c.DataDir == "" {
		return errors.New("config: data_dir is empty")
	}
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.Hostname = h
	}
	if len(c.LocalDomains) == 0 {
		c.LocalDomains = []string{"localhost"}
		if !strings.EqualFold(c.Hostname, "localhost") {
			c.LocalDomains = append(c.LocalDomains, strings.ToLower(c.Hostname))
		}
	}
	if c.TLS.CertFile == "" {
		c.TLS.CertFile = filepath.Join(c.DataDir, "tls", "cert.pem")
	}
	if c.TLS.KeyFile == "" {
		c.TLS.KeyFile = filepath.Join(c.DataDir, "tls", "key.pem")
	}
	if c.Spool.Dir == "" {
		c.Spool.Dir = filepath.Join(c.DataDir, "spool")
	}
	if err := c.DKIM.finish(c.DataDir); err != nil {
		return err
	}
	return c.Validate()
}

// Validate checks the configuration and returns an error naming the first
// bad key and value.
func (c *Config) Validate() error {
	for i, n := range c.MyNetworks {
		if _, err := ParsePrefix(n); err != nil {
			return fmt.Errorf("config: mynetworks[%d] %q: %w", i, n, err)
		}
	}
	for i, a := range c.OwnAddresses {
		if _, err := netip.ParseAddr(a); err != nil {
			return fmt.Errorf("config: own_addresses[%d] %q: %w", i, a, err)
		}
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("config: log.format %q: want text or json", c.Log.Format)
	}
	names := map[string]bool{}
	for i, l := range c.Listeners {
		if l.Name == "" {
			return fmt.Errorf("config: listener[%d]: name is empty", i)
		}
		if names[l.Name] {
			return fmt.Errorf("config: listener[%d]: duplicate name %q", i, l.Name)
		}
		names[l.Name] = true
		switch l.Mode {
		case ModeMX, ModeSubmission, ModeSubmissions:
		default:
			return fmt.Errorf("config: listener %q: mode %q: want mx, submission or submissions", l.Name, l.Mode)
		}
		for _, n := range append(append([]string{}, l.Allow...), l.Deny...) {
			if _, err := ParsePrefix(n); err != nil {
				return fmt.Errorf("config: listener %q: network %q: %w", l.Name, n, err)
			}
		}
	}
	known := map[string]bool{"PLAIN": true, "LOGIN": true, "SCRAM-SHA-256": true, "SCRAM-SHA-256-PLUS": true, "CRAM-MD5": true}
	for _, m := range c.Auth.Mechanisms {
		if !known[strings.ToUpper(m)] {
			return fmt.Errorf("config: auth.mechanisms: unknown mechanism %q", m)
		}
		if strings.EqualFold(m, "CRAM-MD5") && !c.Auth.CRAMMD5 {
			return fmt.Errorf("config: auth.mechanisms lists CRAM-MD5 but auth.cram_md5 is false")
		}
	}
	switch c.Auth.PasswordHash {
	case "argon2id", "bcrypt":
	default:
		return fmt.Errorf("config: auth.password_hash %q: want argon2id or bcrypt", c.Auth.PasswordHash)
	}
	if c.Auth.SCRAMIterations < 4096 {
		return fmt.Errorf("config: auth.scram_iterations %d: must be at least 4096", c.Auth.SCRAMIterations)
	}
	if c.Limits.MaxLineLength < 1000 {
		return fmt.Errorf("config: limits.max_line_length %d: RFC 5321 4.5.3.1.6 requires at least 1000", c.Limits.MaxLineLength)
	}
	if c.Limits.MaxCommandLength < 512 {
		return fmt.Errorf("config: limits.max_command_length %d: RFC 5321 4.5.3.1.4 requires at least 512", c.Limits.MaxCommandLength)
	}
	if c.Limits.MaxRecipients < 100 {
		// RFC 5321 4.5.3.1.8: at least 100 recipients must be buffered.
		return fmt.Errorf("config: limits.max_recipients %d: RFC 5321 4.5.3.1.8 requires at least 100", c.Limits.MaxRecipients)
	}
	if err := c.validateSections(); err != nil {
		return err
	}
	return nil
}

// Marshal renders the configuration as commented TOML.
func (c *Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# relayguard configuration. Generated by `relayguard config print`;\n# save it, edit it, and pass it with --config FILE.\n\n")
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(false)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("config: marshal: %w", err)
	}
	return buf.Bytes(), nil
}

// ParsePrefix parses a CIDR or a bare address (as a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
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
