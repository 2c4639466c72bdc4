package deliver

import (
	"context"
	"testing"

	"github.com/relayguard/relayguard/internal/config"
)

func TestDiscardTransport(t *testing.T) {
	cfg := config.Default().Delivery
	cfg.Transports = map[string]string{"blackhole.test": "discard:dropped by policy", "void.test": "discard"}
	if err := config.ValidateTransport("discard:dropped by policy"); err != nil {
		t.Fatal(err)
	}
	res, err := NewResolver("127.0.0.1:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, "mx.test", nil, Options{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	for dom, text := range map[string]string{"blackhole.test": "dropped by policy", "void.test": "discarded"} {
		out := d.Deliver(context.Background(), dom, &Request{ID: "x", Rcpts: []string{"a@" + dom, "b@" + dom}})
		if len(out) != 2 || !out[0].OK || !out[1].OK || out[1].Rcpt != "b@"+dom || out[0].Text != text {
			t.Errorf("%s: %+v", dom, out)
		}
	}
}
