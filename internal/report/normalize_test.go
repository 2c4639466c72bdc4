package report

import (
	"bytes"
	"cmp"
	"math/rand/v2"
	"net/netip"
	"slices"
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

// TestNormalizedHostRandom: keys of the bytes appendNormalizedHost tells
// apart, of every length to past four words, with blanks and separators
// at every place in a word (and more separators than it keeps).
func TestNormalizedHostRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 20))
	const alphabet = "aZz.@. \t\n19AÄx"
	for range 50000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
			if r.IntN(4) > 0 && b[i] <= ' ' { // (fewer blanks: most keys are read to a far end)
				b[i] = 'q'
			}
		}
		checkNormalized(t, string(b))
	}
	checkNormalized(t, strings.Repeat("a.", 40))
	checkNormalized(t, strings.Repeat("Ab@", 17)+" x")
}

func FuzzNormalizedHost(f *testing.F) {
	f.Add("unknown[192.0.2.1]: SASL LOGIN authentication failed: x")
	f.Add("ÄBC.Example.COM@x")
	f.Fuzz(checkNormalized)
}

// TestNormalizedAddrSubnet: the abuse view's normalised keys of an address
// and of its subnet, made without their names, are the names' normalised
// keys.
func TestNormalizedAddrSubnet(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	addrs := []netip.Addr{{}, netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("255.255.255.255"),
		netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("::ffff:192.0.2.1").Unmap()}
	for range 20000 {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		if r.IntN(3) > 0 {
			addrs = append(addrs, netip.AddrFrom4([4]byte(b[:4])))
		} else {
			addrs = append(addrs, netip.AddrFrom16(b))
		}
	}
	for _, a := range addrs {
		if got, want := appendNormalizedAddr([]byte("x"), a), appendNormalizedHost([]byte("x"), clientName(a)); !bytes.Equal(got, want) {
			t.Fatalf("%v: appendNormalizedAddr %q, want %q", a, got, want)
		}
		if !a.IsValid() {
			continue
		}
		if got, want := appendNormalizedSubnet([]byte("x"), a), appendNormalizedHost([]byte("x"), subnetOf(a).String()); !bytes.Equal(got, want) {
			t.Fatalf("%v: appendNormalizedSubnet %q, want %q", a, got, want)
		}
	}
}

// TestRadixSortSubnets: the subnets' sort orders by key.
func TestRadixSortSubnets(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, size := range []int{0, 1, 2, 100, 5000} {
		for _, bits := range []int{3, 24, 64} {
			cs := make([]subClient, size)
			for i := range cs {
				cs[i] = subClient{r.Uint64() >> (64 - bits), int32(i)}
			}
			want := slices.Clone(cs)
			slices.SortStableFunc(want, func(a, b subClient) int { return cmp.Compare(a.k, b.k) })
			radixSortSubnets(cs)
			if !slices.Equal(cs, want) {
				t.Fatalf("%d keys of %d bits: radixSortSubnets differs from a stable sort", size, bits)
			}
		}
	}
}
