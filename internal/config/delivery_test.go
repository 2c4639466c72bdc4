package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDeliveryConfig(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr string // substring; "" = valid
	}{
		{"defaults", "", ""},
		{"full", `[delivery]
max_queue_lifetime = "3d"
retry_schedule = ["30s", "10m"]
smarthost = "smtp.isp.test:587"
smarthost_user = "me"
smarthost_password_file = "/etc/relayguard/pw"
tls_policy = "encrypt"
[delivery.tls_policies]
"bank.test" = "verify"
[delivery.transports]
"example.org" = "lmtp:unix:/run/dovecot/lmtp"
".corp.test" = "smtp:hub.corp.test:25"
"local.test" = "maildir:/var/mail/{domain}/{local}"
"*" = "lmtp:127.0.0.1:24"
[delivery.rate_limits]
user_messages_per_hour = 0
suspend_on_limit = true
`, ""},
		{"bad lifetime", "[delivery]\nmax_queue_lifetime = \"0s\"\n", `delivery.max_queue_lifetime "0s"`},
		{"empty schedule", "[delivery]\nretry_schedule = []\n", "delivery.retry_schedule is empty"},
		{"bad schedule", "[delivery]\nretry_schedule = [\"1m\", \"-5m\"]\n", `delivery.retry_schedule[1] "-5m0s"`},
		{"bad workers", "[delivery]\nworkers = 0\n", "delivery.workers 0"},
		{"bad concurrency", "[delivery]\nper_domain_concurrency = -1\n", "delivery.per_domain_concurrency -1"},
		{"bad tls", "[delivery]\ntls_policy = \"dane\"\n", `delivery.tls_policy "dane"`},
		{"bad domain tls", "[delivery.tls_policies]\n\"x.test\" = \"always\"\n", `delivery.tls_policies["x.test"] "always"`},
		{"bad smarthost", "[delivery]\nsmarthost = \"smtp.isp.test\"\n", `delivery.smarthost: "smtp.isp.test"`},
		{"user without password", "[delivery]\nsmarthost = \"a.test:587\"\nsmarthost_user = \"me\"\n", `delivery.smarthost_user "me" needs delivery.smarthost_password_file`},
		{"bad transport kind", "[delivery.transports]\n\"x.test\" = \"uucp:host\"\n", `delivery.transports["x.test"] "uucp:host": unknown transport "uucp"`},
		{"relative maildir", "[delivery.transports]\n\"x.test\" = \"maildir:mail\"\n", ""},
		{"bad lmtp port", "[delivery.transports]\n\"x.test\" = \"lmtp:127.0.0.1:99999\"\n", `bad port "99999"`},
		{"negative limit", "[delivery.rate_limits]\nuser_recipients_per_day = -3\n", "delivery.rate_limits.user_recipients_per_day -3"},
		{"bad dns", "[delivery]\ndns_server = \"127.0.0.53\"\n", "delivery.dns_server"},
		{"unknown key", "[delivery]\nmax_lifetime = \"1d\"\n", "max_lifetime"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.toml")
			if err := os.WriteFile(p, []byte(tc.toml), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := Load(p)
			if err == nil {
				err = c.Finish(t.TempDir())
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
	c := Default()
	if c.Delivery.MaxQueueLifetime.D() != 5*24*time.Hour || c.Delivery.RetrySchedule[0].D() > 5*time.Minute {
		t.Fatalf("defaults: lifetime %v, first retry %v", c.Delivery.MaxQueueLifetime.D(), c.Delivery.RetrySchedule[0].D())
	}
	// The section renders (config print) and reads back.
	b, err := c.Marshal()
	if err != nil || !strings.Contains(string(b), "[delivery.rate_limits]") {
		t.Fatalf("marshal: %v", err)
	}
	p := filepath.Join(t.TempDir(), "printed.toml")
	os.WriteFile(p, b, 0o644)
	back, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if back.Delivery.MaxQueueLifetime != c.Delivery.MaxQueueLifetime || len(back.Delivery.RetrySchedule) != len(c.Delivery.RetrySchedule) ||
		back.Delivery.RateLimits != c.Delivery.RateLimits {
		t.Fatalf("printed configuration reads back as %+v", back.Delivery)
	}
}
