package msgauth_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/msgauth"
)

// Authentication-Results fields claiming our authserv-id are dropped
// from the header, however the message is cut into writes; fields of other
// servers, look-alike names and the body pass unchanged; an overlong field
// is judged on its start, so padding does not smuggle a forgery through.
func TestAuthResultsFilter(t *testing.T) {
	long := strings.Repeat("\tx="+strings.Repeat("y", 70)+"\r\n", 2000) // ~150 KB of continuation lines
	in := "Received: from a\r\n\tby b; Sat, 5 Dec 2026 10:00:00 +0000\r\n" +
		"Authentication-Results: MX.Example.COM; dmarc=pass header.from=bank.test\r\n" +
		"Authentication-Results:\r\n mx.example.com (forged); spf=pass smtp.mailfrom=x@bank.test\r\n" +
		"Authentication-Results: other.example.net; dkim=pass header.d=list.test\r\n" +
		"Authentication-Results-Original: mx.example.com; none\r\n" +
		"authentication-results: mx.example.com;\r\n" + long +
		"X-Padding: start\r\n" + long +
		"Subject: hi\r\n" +
		"\r\n" +
		"Authentication-Results: mx.example.com; dmarc=pass\r\n" +
		"body\r\n"
	want := "Received: from a\r\n\tby b; Sat, 5 Dec 2026 10:00:00 +0000\r\n" +
		"Authentication-Results: other.example.net; dkim=pass header.d=list.test\r\n" +
		"Authentication-Results-Original: mx.example.com; none\r\n" +
		"X-Padding: start\r\n" + long +
		"Subject: hi\r\n" +
		"\r\n" +
		"Authentication-Results: mx.example.com; dmarc=pass\r\n" +
		"body\r\n"
	for _, chunk := range []int{1, 7, 100, 4096, 1 << 20} {
		var out bytes.Buffer
		f := msgauth.NewAuthResultsFilter(&out, "mx.example.com")
		for b := []byte(in); len(b) > 0; {
			n := min(chunk, len(b))
			if _, err := f.Write(b[:n]); err != nil {
				t.Fatal(err)
			}
			b = b[n:]
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Fatalf("chunk %d: got %d octets, want %d:\n%.600s", chunk, out.Len(), len(want), out.String())
		}
		if f.Removed != 3 {
			t.Fatalf("chunk %d: removed %d fields, want 3", chunk, f.Removed)
		}
	}
	// A message that is all header, without the empty line.
	var out bytes.Buffer
	f := msgauth.NewAuthResultsFilter(&out, "mx.example.com")
	f.Write([]byte("Subject: x\r\nAuthentication-Results: mx.example.com; none\r\nX-Last: y"))
	f.Close()
	if out.String() != "Subject: x\r\nX-Last: y" {
		t.Fatalf("header only: %q", out.String())
	}
}

// A forger's other spellings of our authserv-id (RFC 8601 §2.2: a token or
// a quoted-string, with comments and folding around it; a trailing dot)
// are ours too and dropped; another server's id that merely contains ours
// is not.
func TestAuthResultsFilterSpellings(t *testing.T) {
	for _, tc := range []struct {
		field string
		ours  bool
	}{
		{"Authentication-Results: \"mx.example.com\"; dkim=pass", true},
		{"Authentication-Results: \"MX.example\\.com\"; dkim=pass", true},
		{"Authentication-Results: (c) mx.example.com; dkim=pass", true},
		{"Authentication-Results: (a(b)\\) c) mx.example.com; dkim=pass", true},
		{"Authentication-Results:\r\n\t(comment)\r\n mx.example.com; dkim=pass", true},
		{"Authentication-Results: mx.example.com(c); dkim=pass", true},
		{"Authentication-Results: mx.example.com.; dkim=pass", true},
		{"Authentication-Results: mx.example.com 1; dkim=pass", true},
		{"Authentication-Results : mx.example.com; dkim=pass", true},
		{"Authentication-Results:mx.example.com;dkim=pass", true},
		{"Authentication-Results: mx.example.com\r\n ; dkim=pass", true},
		{"Authentication-Results: mx.example.com.evil.test; dkim=pass", false},
		{"Authentication-Results: \"mx.example.com evil\"; dkim=pass", false},
		{"Authentication-Results: (mx.example.com) other.test; dkim=pass", false},
	} {
		in := "Subject: a\r\n" + tc.field + "\r\nX-After: b\r\n\r\nbody\r\n"
		var out bytes.Buffer
		f := msgauth.NewAuthResultsFilter(&out, "mx.example.com")
		f.Write([]byte(in))
		f.Close()
		want := in
		if tc.ours {
			want = "Subject: a\r\nX-After: b\r\n\r\nbody\r\n"
		}
		if out.String() != want {
			t.Errorf("%q: got %q, want it dropped: %v", tc.field, out.String(), tc.ours)
		}
	}
}
