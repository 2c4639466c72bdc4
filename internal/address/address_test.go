package address

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseForward(t *testing.T) {
	for _, tc := range []struct {
		in      string
		utf8    bool
		local   string
		domain  string
		literal string
		canon   string
		err     string // enhanced code expected, "" for success
	}{
		{in: "<user@example.com>", local: "user", domain: "example.com", canon: "user@example.com"},
		{in: "<User@EXAMPLE.COM.>", local: "User", domain: "example.com", canon: "User@example.com"},
		{in: "<victim%remote.example@local.test>", local: "victim%remote.example", domain: "local.test"},
		{in: "<remote.example!victim@local.test>", local: "remote.example!victim", domain: "local.test"},
		{in: "<victim@remote.example@local.test>", local: "victim@remote.example", domain: "local.test", canon: `"victim@remote.example"@local.test`},
		{in: `<"victim@remote.example">`, err: "5.1.3"},
		{in: `<"victim@remote.example"@local.test>`, local: "victim@remote.example", domain: "local.test"},
		{in: `<"victim%remote.example"@local.test>`, local: "victim%remote.example", domain: "local.test", canon: "victim%remote.example@local.test"},
		{in: `<"a b"@x.test>`, local: "a b", domain: "x.test", canon: `"a b"@x.test`},
		{in: `<"a\"b"@x.test>`, local: `a"b`, domain: "x.test", canon: `"a\"b"@x.test`},
		{in: `<"vic"tim@x.test>`, local: "victim", domain: "x.test"},
		{in: "<@relay.example:victim@remote.example>", local: "victim", domain: "remote.example"},
		{in: "<@a.example,@b.example:victim@remote.example>", local: "victim", domain: "remote.example"},
		{in: "<@[192.0.2.1]:victim@remote.example>", local: "victim", domain: "remote.example"},
		{in: "<@[IPv6:2001:db8::1]:victim@remote.example>", local: "victim", domain: "remote.example"},
		{in: "<alice@example.test。>", utf8: true, local: "alice", domain: "example.test"},
		{in: "<user@[192.0.2.1]>", local: "user", literal: "192.0.2.1", canon: "user@[192.0.2.1]"},
		{in: "<user@[IPv6:2001:db8::1]>", local: "user", literal: "2001:db8::1", canon: "user@[IPv6:2001:db8::1]"},
		{in: "<user@[ipv6:2001:DB8::1]>", local: "user", literal: "2001:db8::1"},
		{in: "<user@[2001:db8::1]>", err: "5.1.3"},
		{in: "<user@[IPv6:192.0.2.1]>", err: "5.1.3"},
		{in: "<user@[300.1.1.1]>", err: "5.1.3"},
		{in: "<user@[x:y]>", err: "5.1.3"},
		{in: "<Postmaster>", local: "postmaster", canon: "postmaster"},
		{in: "<remote.example!victim>", err: "5.1.3"},
		{in: "<victim>", err: "5.1.3"},
		{in: "<>", err: "5.1.3"},
		{in: "user@example.com", err: "5.1.3"},
		{in: "<user@>", err: "5.1.3"},
		{in: "<@example.com>", err: "5.1.3"},
		{in: "<user@exa mple.com>", err: "5.1.3"},
		{in: "<user@-bad.com>", err: "5.1.3"},
		{in: "<us\x00er@example.com>", err: "5.1.3"},
		{in: "<user@bücher.example>", err: "5.6.7"},
		{in: "<user@bücher.example>", utf8: true, local: "user", domain: "xn--bcher-kva.example"},
		{in: "<user@XN--BCHER-KVA.example>", local: "user", domain: "xn--bcher-kva.example"},
		{in: "<üser@example.com>", utf8: true, local: "üser", domain: "example.com"},
		{in: "<user@example.com.>", local: "user", domain: "example.com"},
		{in: "<" + strings.Repeat("a", 250) + "@example.com>", err: "5.1.3"},
	} {
		p, err := ParseForward(tc.in, Options{SMTPUTF8: tc.utf8})
		if tc.err != "" {
			e, ok := err.(*Error)
			if !ok || e.Enhanced != tc.err {
				t.Errorf("ParseForward(%q) = %+v, %v; want error %s", tc.in, p, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseForward(%q): %v", tc.in, err)
			continue
		}
		if p.Local != tc.local || p.Domain != tc.domain {
			t.Errorf("ParseForward(%q) = local %q domain %q; want %q %q", tc.in, p.Local, p.Domain, tc.local, tc.domain)
		}
		if tc.literal != "" && p.Literal != netip.MustParseAddr(tc.literal) {
			t.Errorf("ParseForward(%q) literal = %v, want %s", tc.in, p.Literal, tc.literal)
		}
		if tc.canon != "" && p.String() != tc.canon {
			t.Errorf("ParseForward(%q).String() = %q, want %q", tc.in, p.String(), tc.canon)
		}
	}
}

func TestParseReverseNull(t *testing.T) {
	p, err := ParseReverse("<>", Options{})
	if err != nil || !p.Null || p.String() != "" {
		t.Fatalf("ParseReverse(<>) = %+v, %v", p, err)
	}
	if _, err := ParseReverse("<Postmaster>", Options{}); err == nil {
		t.Fatal("bare postmaster accepted as a reverse path")
	}
}

func TestSplitArg(t *testing.T) {
	for _, tc := range []struct{ in, path, params string }{
		{"<a@b.c> SIZE=10 BODY=8BITMIME", "<a@b.c>", "SIZE=10 BODY=8BITMIME"},
		{" <a@b.c>", "<a@b.c>", ""},
		{`<"x> y"@b.c> SMTPUTF8`, `<"x> y"@b.c>`, "SMTPUTF8"},
		{"<>", "<>", ""},
	} {
		p, params, err := SplitArg(tc.in)
		if err != nil || p != tc.path || params != tc.params {
			t.Errorf("SplitArg(%q) = %q, %q, %v", tc.in, p, params, err)
		}
	}
	for _, bad := range []string{"a@b.c", "<a@b.c", "<a@b.c>junk", `<"a>`} {
		if _, _, err := SplitArg(bad); err == nil {
			t.Errorf("SplitArg(%q) accepted", bad)
		}
	}
}

// FuzzParseForward checks that the parser never panics, and that whatever
// it accepts has a canonical form that parses back to the same mailbox.
func FuzzParseForward(f *testing.F) {
	for _, s := range []string{"<a@b.c>", `<"a b"@c.d>`, "<@x:y@z>", "<a@[1.2.3.4]>", "<a@[IPv6:::1]>", "<Postmaster>", "<a%b@c>", "<a!b@c>", "<a@b@c>"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, u bool) {
		p, err := ParseForward(s, Options{SMTPUTF8: u})
		if err != nil {
			return
		}
		if p.Postmaster && p.Domain == "" && !p.IsLiteral() {
			return
		}
		back, err := ParseForward("<"+p.String()+">", Options{SMTPUTF8: true})
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", p.String(), s, err)
		}
		if back.Local != p.Local || back.Domain != p.Domain || back.Literal != p.Literal {
			t.Fatalf("round trip of %q: %+v != %+v", s, back, p)
		}
	})
}
