package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReportSection(t *testing.T) {
	c := Default()
	if c.Report.Format != "text" || c.Report.SyslogName != "postfix" || !c.Report.HTMLMail {
		t.Fatalf("defaults %+v", c.Report)
	}
	if err := c.Report.validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	dir := t.TempDir()
	for _, tc := range []struct{ toml, want string }{
		{"[report]\nformat = \"pdf\"\n", `report.format "pdf"`},
		{"[report]\nsmtp_server = \"localhost\"\n", `report.smtp_server "localhost"`},
		{"[report]\nmail_from = \"not an address\"\n", `report.mail_from "not an address"`},
		{"[report]\nsyslog_name = \"\"\n", "report.syslog_name"},
	} {
		p := filepath.Join(dir, "c.toml")
		os.WriteFile(p, []byte(tc.toml), 0o644)
		c, err := Load(p)
		if err == nil {
			err = c.Finish(dir)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to name %s", tc.toml, err, tc.want)
		}
	}
	p := filepath.Join(dir, "ok.toml")
	os.WriteFile(p, []byte("[report]\nformat = \"html\"\nsmtp_server = \"[::1]:2525\"\nlogs = [\"/var/log/mail.log\"]\n"), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(dir); err != nil {
		t.Fatal(err)
	}
	if c.Report.Format != "html" || c.Report.SMTPServer != "[::1]:2525" || len(c.Report.Logs) != 1 {
		t.Fatalf("loaded %+v", c.Report)
	}
}
