package milter

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/relayguard/relayguard/internal/config"
)

// TestBadPeerLoggedInTheLog: a peer that sends a packet over go-milter's
// 1 MiB limit, or disconnects in the middle of a packet, is a WARN record
// of the milter's log (its format: text or JSON), not a line of go-milter's
// own on stderr; the milter goes on serving the next connection.
func TestBadPeerLoggedInTheLog(t *testing.T) {
	tm := startMilter(t, config.RateLimitConfig{}, defaultMilterConfig())
	for _, b := range [][]byte{
		binary.BigEndian.AppendUint32(nil, 0xffffffff),      // length over 1 MiB
		append(binary.BigEndian.AppendUint32(nil, 13), 'O'), // cut in the option negotiation
	} {
		c, err := net.Dial("unix", tm.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(b)
		if uc, ok := c.(*net.UnixConn); ok {
			uc.CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.Read(make([]byte, 1)) // until the milter closes it
		c.Close()
	}
	for _, want := range []string{
		`level=WARN msg="milter: go-milter" err="Error reading milter command: milter: packet length 4294967295 exceeds 1048576 bytes"`,
		`level=WARN msg="milter: go-milter" err="Error reading milter command: unexpected EOF"`,
	} {
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(tm.logs.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", want, tm.logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	s := tm.session(t, 0)
	if act, err := s.Mail("<www@example.test>", nil); err != nil || act.Code != gomilter.ActAccept {
		t.Fatalf("MAIL after the bad peers: %+v %v", act, err)
	}
}
