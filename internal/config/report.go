package config

import (
	"fmt"
	"net/mail"
)

// ReportConfig is the [report] section: defaults for `relayguard report`.
type ReportConfig struct {
	Format           string   `toml:"format" comment:"Default output format of relayguard report: text, json or html."`
	SyslogName       string   `toml:"syslog_name" comment:"Postfix syslog_name to recognise (pflogsumm --syslog-name)."`
	Logs             []string `toml:"logs" comment:"Log files read when no file is named on the command line (empty: standard input)."`
	MailFrom         string   `toml:"mail_from" comment:"Envelope and header sender of reports sent with --mail-to. Empty: relayguard@HOSTNAME."`
	SMTPServer       string   `toml:"smtp_server" comment:"host:port of the SMTP server that relays reports sent with --mail-to. STARTTLS (certificate verified) is used when a non-loopback server offers it."`
	SMTPUser         string   `toml:"smtp_user" comment:"SMTP AUTH user for smtp_server (PLAIN, only over TLS or to localhost). Empty: no AUTH."`
	SMTPPasswordFile string   `toml:"smtp_password_file" comment:"File holding the SMTP AUTH password for smtp_user."`
	HTMLMail         bool     `toml:"html_mail" comment:"Send --mail-to reports as multipart/alternative with the HTML report (else plain text only)."`
}

func defaultReport() ReportConfig {
	return ReportConfig{Format: "text", SyslogName: "postfix", SMTPServer: "127.0.0.1:25", HTMLMail: true}
}

func (c *ReportConfig) validate() error {
	switch c.Format {
	case "text", "json", "html":
	default:
		return fmt.Errorf("report.format %q: want text, json or html", c.Format)
	}
	if c.SyslogName == "" {
		return fmt.Errorf("report.syslog_name is empty: want the Postfix syslog_name, such as postfix")
	}
	if c.SMTPServer != "" {
		if err := validHostPort(c.SMTPServer); err != nil {
			return fmt.Errorf("report.smtp_server %q: want host:port with a port from 1 to 65535", c.SMTPServer)
		}
	}
	if c.MailFrom != "" {
		if _, err := mail.ParseAddress(c.MailFrom); err != nil {
			return fmt.Errorf("report.mail_from %q: want an address: %v", c.MailFrom, err)
		}
	}
	return nil
}
