package report

import (
	"strings"
	"testing"
)

// refNormalizedHost is appendNormalizedHost as it was before the table of
// byte classes (three passes of comparisons): the reference the tests
// below hold the faster code to.
func refNormalizedHost(dst []byte, s string) []byte {
	ascii := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ' ' || c == '\t' || c == '\n' {
			s = s[:i]
			break
		} else if c >= 0x80 {
			ascii = false
		}
	}
	if oct, ok := dottedQuad(s); ok {
		return append(dst, oct[:]...)
	}
	if !ascii {
		s = strings.ToLower(s)
	}
	start := len(dst)
	end := len(s)
	for i := len(s) - 1; i >= -1; i-- {
		if i < 0 || s[i] == '.' || s[i] == '@' {
			dst = append(dst, s[i+1:end]...)
			end = i
		}
	}
	if ascii {
		for i := start; i < len(dst); i++ {
			if c := dst[i]; 'A' <= c && c <= 'Z' {
				dst[i] = c + 'a' - 'A'
			}
		}
	}
	return dst
}

func checkNormalized(t *testing.T, s string) {
	t.Helper()
	got := string(appendNormalizedHost([]byte("x"), s))
	want := string(refNormalizedHost([]byte("x"), s))
	if got != want {
		t.Fatalf("appendNormalizedHost(%q) = %q, want %q", s, got, want)
	}
}

func TestNormalizedHostSame(t *testing.T) {
	for _, s := range []string{
		"", "a", "A", ".", "@", "..", "a.b", "A.B@C", "unknown[192.0.2.1]: SASL LOGIN authentication failed: x",
		"unknown[192.0.2.1]", "192.0.2.1", "1.2.3.4 x", "Mail.Example.COM", "user@Example.org", "a..b.", ".leading",
		"2001:db8::1", "host.example x y", "ÄBC.example", "äbc", "\xff.A", "a\tb.c", "a\nb", " lead", "x.Y.z\t",
		"ÄBC.Example.COM@x", "İ.x", "1.2.3.4.5", "256.1.1.1",
	} {
		checkNormalized(t, s)
	}
}

func FuzzNormalizedHost(f *testing.F) {
	f.Add("unknown[192.0.2.1]: SASL LOGIN authentication failed: x")
	f.Add("ÄBC.Example.COM@x")
	f.Fuzz(checkNormalized)
}
