package config

import (
	"fmt"
	"strings"
)

// MilterConfig is the [milter] section: `relayguard milter`, the milter
// for Postfix's smtpd_milters (authenticated submission) and
// non_smtpd_milters (mail submitted with sendmail by local programs).
type MilterConfig struct {
	Listen            string   `toml:"listen" comment:"Milter listener of \"relayguard milter\": host:port, or unix:/path for a unix socket.\nPostfix side: smtpd_milters = inet:127.0.0.1:10032 and non_smtpd_milters = inet:127.0.0.1:10032 (docs/milter.md)."`
	QueueDirectories  []string `toml:"queue_directories" comment:"Postfix queue directories (queue_directory of each instance). A message submitted with sendmail is attributed\nto its local user by the \"Received: by HOST (Postfix, from userid N)\" line Postfix writes into the queue file,\nwhich the milter reads there (it needs read access: run it as root or as Postfix's mail_owner)."`
	ExemptUsers       []string `toml:"exempt_users" comment:"Local users (names or numeric uids) whose sendmail submissions are not limited: the MTA's own user, root."`
	HeaderFromBinding bool     `toml:"header_from_binding" comment:"An authenticated client's header From: addresses (and envelope sender) must be addresses its login owns\n(relayguard user addr, or the login itself when it is an address, or LOGIN@each local domain)."`
	SMTPSendLimits    bool     `toml:"smtp_send_limits" comment:"Apply [delivery.rate_limits] to authenticated SMTP clients. Turn off when \"relayguard policy\" already\napplies them to the same Postfix (a message would be counted twice)."`
}

func defaultMilter() MilterConfig {
	return MilterConfig{
		Listen:            "127.0.0.1:10032",
		QueueDirectories:  []string{"/var/spool/postfix"},
		ExemptUsers:       []string{"root", "postfix"},
		HeaderFromBinding: true,
		SMTPSendLimits:    true,
	}
}

func (c *MilterConfig) validate() error {
	if path, unix := strings.CutPrefix(c.Listen, "unix:"); unix {
		if path == "" {
			return fmt.Errorf("milter.listen %q: no socket path after unix:", c.Listen)
		}
	} else if err := validListenAddress(c.Listen); err != nil {
		return fmt.Errorf("milter.listen %q: %w, or unix:/path", c.Listen, err)
	}
	for i, d := range c.QueueDirectories {
		if !strings.HasPrefix(d, "/") {
			return fmt.Errorf("milter.queue_directories[%d] %q: must be an absolute path", i, d)
		}
	}
	for i, u := range c.ExemptUsers {
		if strings.TrimSpace(u) == "" {
			return fmt.Errorf("milter.exempt_users[%d]: empty name", i)
		}
	}
	return nil
}
