package audit

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/relayguard/relayguard/internal/egress"
)

// The sockets of one server are one listener even when a child forked
// between the walks of /proc that found each socket's holders (Postfix's
// master and a new smtpd on 0.0.0.0:587, master alone on [::]:587): the
// audit reported such a server twice, and TestOpenSubmissionVRFYNoTLS
// failed now and then under load with two open-submission findings.
func TestGroupSocketsOneServerDespiteAFork(t *testing.T) {
	sock := func(addr string, inode uint64, pids ...int) egress.Listening {
		s := egress.Listening{Addr: netip.MustParseAddrPort(addr), Inode: inode}
		for _, p := range pids {
			s.Processes = append(s.Processes, egress.Process{PID: p})
		}
		return s
	}
	socks := []egress.Listening{
		sock("0.0.0.0:25", 1, 100),             // Postfix master
		sock("0.0.0.0:587", 2, 100, 205),       // master, and smtpd forked before this walk
		sock("127.0.0.1:10025", 3, 300),        // another server
		sock("192.0.2.1:587", 4, 400),          // a second server on 587, its own address
		sock("[::]:25", 5, 100),                // master
		sock("[::]:587", 6, 100),               // master, walked after smtpd exited
		sock("[::1]:10025", 7),                 // no holder seen (another user's)
		sock("[2001:db8::1]:587", 8, 401),      // the second server's child...
		sock("[2001:db8::2]:587", 9, 400, 401), // ...and a socket both hold: one server
	}
	var got [][]uint64
	for _, g := range groupSockets(socks) {
		var inodes []uint64
		for _, s := range g {
			inodes = append(inodes, s.Inode)
		}
		slices.Sort(inodes)
		got = append(got, inodes)
	}
	want := [][]uint64{{1, 5}, {2, 6}, {3}, {4, 8, 9}, {7}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("groups by inode: %v, want %v", got, want)
	}
	all := held([]egress.Listening{socks[1], socks[5]})
	var pids []int
	for _, p := range all.Processes {
		pids = append(pids, p.PID)
	}
	if !slices.Equal(pids, []int{100, 205}) || all.Addr.Port() != 587 {
		t.Fatalf("holders of the 587 group: %v on %v", pids, all.Addr)
	}
}
