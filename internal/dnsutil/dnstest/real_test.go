package dnstest

import (
	"net"
	"testing"
	"time"
)

// TestStoppedServerKeepsItsPort: while NSD is stopped, its TCP port stays
// reserved (another process's socket cannot take it, so the restart cannot
// fail on "Address already in use"), a query to it is refused as to a
// closed port, and NSD starts again on it.
func TestStoppedServerKeepsItsPort(t *testing.T) {
	t.Parallel()
	n := StartNSD(t, map[string][]string{"rgtest": {"a IN A 127.0.0.2"}})
	n.Stop()
	if ln, err := net.Listen("tcp", n.Addr); err == nil {
		ln.Close()
		t.Fatalf("the stopped server's port %s could be taken by another socket", n.Addr)
	}
	if c, err := net.Dial("tcp", n.Addr); err == nil {
		c.Close()
		t.Errorf("a connection to the stopped server's port was accepted")
	}
	n.Start()
	if err := waitAnswer(n.Addr, 5*time.Second, nil); err != nil {
		t.Fatalf("NSD after its restart: %v", err)
	}
}
