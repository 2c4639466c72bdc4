package accounts

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/maillog"
)

// TestWebhookFailureHidesSecret: a webhook's path and query are its secret
// (Slack's /services/T/B/TOKEN, ?token=...). A webhook that fails — refused
// by a closed port, answered with a 500, or redirected to a dead URL — is
// logged and returned naming its scheme and host, never the path, the
// query or a password. Before, the error was "webhook URL: Post \"URL\":
// ..." with the whole URL twice, in the log of serve and watch.
func TestWebhookFailureHidesSecret(t *testing.T) {
	const secret = "/services/T0/B0/PATHS3CRET?token=QS3CRET"
	secrets := []string{"PATHS3CRET", "QS3CRET", "PASSS3CRET", "REDIRS3CRET"}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer failing.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+closedAddr+"/REDIRS3CRET", http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()

	for _, c := range []struct{ name, url, want string }{
		{"refused", "http://user:PASSS3CRET@" + closedAddr + secret, "webhook http://" + closedAddr + "/…: dial tcp " + closedAddr},
		{"500", failing.URL + secret, "webhook " + failing.URL + "/…: 500 Internal Server Error"},
		{"redirected", redirect.URL + secret, "webhook " + redirect.URL + "/…: dial tcp " + closedAddr},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs syncBuf
			al := &Alerter{WebhookURL: c.url, Log: maillog.New(slog.New(slog.NewTextHandler(&logs, nil)))}
			err := al.Notify(context.Background(), "subject", "text", time.Now(), map[string]string{"a": "b"}, "alert", "test")
			if err == nil {
				t.Fatal("Notify: no error from a failing webhook")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
			if !strings.Contains(logs.String(), "alert webhook failed") {
				t.Errorf("no failure logged: %s", logs.String())
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error shows the secret %s: %v", s, err)
				}
				if strings.Contains(logs.String(), s) {
					t.Errorf("log shows the secret %s: %s", s, logs.String())
				}
			}
		})
	}
}
