package logwatch

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// checkParseAddr holds parseAddr to netip.ParseAddr on s.
func checkParseAddr(t *testing.T, s string) {
	t.Helper()
	got, gerr := parseAddr(s)
	want, werr := netip.ParseAddr(s)
	if got != want || (gerr == nil) != (werr == nil) {
		t.Fatalf("parseAddr(%q) = %v, %v; netip.ParseAddr: %v, %v", s, got, gerr, want, werr)
	}
	if _, ok := parseIPv4(s); ok && !want.Is4() {
		t.Fatalf("parseIPv4(%q) accepted what ParseAddr reads as %v", s, want)
	}
	if a, ok := parseIPv6Full(s); ok && (a != want || werr != nil) {
		t.Fatalf("parseIPv6Full(%q) = %v; netip.ParseAddr: %v, %v", s, a, want, werr)
	}
}

// TestParseAddrIPv6 holds parseAddr to netip.ParseAddr on IPv6 addresses
// written in full and near them: groups of 0 to 5 hex digits of either
// case, seven to nine groups, "::", zones and IPv4 tails.
func TestParseAddrIPv6(t *testing.T) {
	for _, s := range []string{"0:0:0:0:0:0:0:0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "FFFF:ffff:Abcd:0:0:0:0:1", "1:2:3:4:5:6:7:8",
		"1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:", ":1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8%eth0", "1:2:3:4:5:6:1.2.3.4",
		"12345:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:12345", "1::3:4:5:6:7:8", "0:0:0:0:0:ffff:102:304", "1:2:3:4:5:6:7:g", "1:2:3:4:5:6:7:8 "} {
		checkParseAddr(t, s)
	}
	r := rand.New(rand.NewPCG(3, 4))
	digits := "0123456789abcdefABCDEFg"
	for range 200000 {
		var b []byte
		for g := range 7 + r.IntN(3) {
			if g > 0 {
				b = append(b, ':')
				if r.IntN(50) == 0 {
					b = append(b, ':')
				}
			}
			for range r.IntN(6) {
				b = append(b, digits[r.IntN(len(digits))])
			}
		}
		if r.IntN(20) == 0 {
			b = append(b, "%eth0"[:1+r.IntN(4)]...)
		}
		checkParseAddr(t, string(b))
	}
	// 39 bytes, every group of four digits (parseIPv6Full's fast path),
	// half of them with one byte changed to a digit, a colon or neither.
	for range 200000 {
		var b []byte
		for g := range 8 {
			if g > 0 {
				b = append(b, ':')
			}
			for range 4 {
				b = append(b, digits[r.IntN(len(digits)-1)])
			}
		}
		if r.IntN(2) == 0 {
			b[r.IntN(len(b))] = ":%. 0fFg"[r.IntN(8)]
		}
		checkParseAddr(t, string(b))
	}
}

// TestParseAddrSame compares the hand-read dotted quad with
// netip.ParseAddr on addresses, near-addresses and garbage built from
// digits, dots and a few other bytes.
func TestParseAddrSame(t *testing.T) {
	for _, s := range []string{"", "1.2.3.4", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3.04", "1.2.3",
		"1.2.3.4.5", "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4 ", "1.2.3.4%eth0", "::ffff:1.2.3.4", "2001:db8::1", "1000.1.1.1", "0.0.0.00"} {
		checkParseAddr(t, s)
	}
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := "0123456789..........:a%"
	for range 200000 {
		var s string
		if r.IntN(2) == 0 {
			s = fmt.Sprintf("%d.%d.%d.%d", r.IntN(300), r.IntN(300), r.IntN(256), r.IntN(1000))
		} else {
			b := make([]byte, r.IntN(17))
			for i := range b {
				b[i] = alphabet[r.IntN(len(alphabet))]
			}
			s = string(b)
		}
		checkParseAddr(t, s)
	}
}

func FuzzParseAddr(f *testing.F) {
	f.Add("192.0.2.1")
	f.Add("01.2.3.4")
	f.Add("2001:db8:0:0:1:0:0:1")
	f.Add("1:2:3:4:5:6:7:8%eth0")
	f.Fuzz(func(t *testing.T, s string) { checkParseAddr(t, s) })
}
