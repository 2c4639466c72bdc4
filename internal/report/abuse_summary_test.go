package report

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// abuseFrom turns bytes into an abuse view's tables, through the client
// stage's own calls: failed logins (with and without a user), relay
// attempts and rejections from IPv4 addresses in few /24s (so that counts
// tie and subnets gather addresses), IPv6 ones in few /64s, IPv4-mapped,
// zoned and invalid ones.
func abuseFrom(data []byte) *abuseState {
	s := newAbuseState(nil, &arena{})
	users := []string{"", "admin", "info", "alice", "test", "root", "", "bob"}
	for len(data) >= 3 {
		a, b, c := data[0], data[1], data[2]
		data = data[3:]
		var ip netip.Addr
		switch c >> 5 {
		case 0, 1, 2:
			ip = netip.AddrFrom4([4]byte{198, 51, a & 7, b})
		case 3:
			ip = netip.AddrFrom4([4]byte{a, b, c & 3, 9})
		case 4:
			ip = netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 0, 0, 0, a & 3, 0, 0, 0, 0, 0, 0, 0, b})
		case 5:
			ip = netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 203, 13: 0, 14: 113, 15: a}) // IPv4-mapped
		case 6:
			ip = netip.AddrFrom16([16]byte{0xfe, 0x80, 15: a & 3}).WithZone([]string{"eth0", "eth1"}[b&1])
		default:
			if a&1 == 0 {
				ip = netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 1, a, 0, 0, 15: b & 1})
			} // (else invalid: unknown)
		}
		switch c & 3 {
		case 0, 1:
			s.authFailure(ip, users[b&7], int64(1+c>>2&3))
		case 2:
			s.relayAttempt(ip, "example.com")
		default:
			s.client(ip).rejects++
		}
	}
	return s
}

// sameSummary fails if summary(n) of s differs from refSummary's.
func sameSummary(t *testing.T, s *abuseState, n int) {
	t.Helper()
	got, want := s.summary(n), refSummary(s, n)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%d clients, top %d:\n got  %+v\n want %+v", s.clientCount(), n, got, want)
	}
}

// TestAbuseSummarySameAsReference holds the abuse summary to its copy as it
// was (abuse_summary_ref_test.go) over random tables, small and large (past
// a block of clients), at every limit from none to all.
func TestAbuseSummarySameAsReference(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(8, 19))
	for run := range 60 {
		size := 1 + rng.IntN(400)
		if run%10 == 0 {
			size = 5000 + rng.IntN(20000)
		}
		data := make([]byte, 3*size)
		for i := range data {
			data[i] = byte(rng.UintN(256))
		}
		s := abuseFrom(data)
		for _, n := range []int{-1, 0, 1, 2, 3, 10, 20, 100, int(s.clientCount()), int(s.clientCount()) + 1} {
			sameSummary(t, s, n)
		}
	}
}

func FuzzAbuseSummarySameAsReference(f *testing.F) {
	f.Add(byte(3), []byte(strings.Repeat("\x01\x02\x00\x01\x03\x04\x02\x02\x60", 30)))
	f.Add(byte(20), []byte(strings.Repeat("\x05\x09\xe1\x02\x01\xc0\x01\x07\x83\x03\x03\xa2", 40)))
	f.Fuzz(func(t *testing.T, n byte, data []byte) {
		s := abuseFrom(data)
		sameSummary(t, s, int(n%40)-1)
	})
}

// TestUserRowsCountPairs holds the users by client (userRows: the first
// user of a client counted in its row, the others in userPairs) to a plain
// count of authFailure's calls by (address, user), over random runs where
// addresses try one user, several, the same one again at once (lastFail)
// or none.
func TestUserRowsCountPairs(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(10, 7))
	users := []string{"", "admin", "info", "alice", "test"}
	for run := range 40 {
		s := newAbuseState(nil, &arena{})
		type pair struct {
			ip   netip.Addr
			user string
		}
		want := map[pair]int64{}
		addrs := 1 + rng.IntN(50)
		if run%8 == 0 {
			addrs = 5000 + rng.IntN(5000) // (past a block of rows)
		}
		for range 20 * addrs {
			ip := netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(addrs) >> 8), byte(rng.IntN(addrs))})
			user := users[rng.IntN(len(users))]
			if rng.IntN(4) == 0 { // (a user of its own: the address's second or later)
				user = fmt.Sprint("u", rng.IntN(3))
			}
			n := int64(1 + rng.IntN(3))
			for range 1 + rng.IntN(3) { // (the same failure again: lastFail)
				s.authFailure(ip, user, n)
				if user != "" {
					want[pair{ip, user}] += n
				}
			}
		}
		got := map[pair]int64{}
		for c, us := range s.userRows(int(s.clientCount()), func(c int32) int32 { return c }) {
			for u, n := range us {
				got[pair{s.addrOf(int32(c)), s.users.key(u)}] += n
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("run %d: users by client\n got  %v\n want %v", run, got, want)
		}
	}
}
