package smtpd

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// FuzzSession feeds arbitrary client input to a whole SMTP session (the
// command reader, the command parsers, AUTH and DATA) over an in-memory
// connection. The session must never panic and must end when the input
// does.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@mail.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
		"HELO x\nMAIL FROM:<>\nRCPT TO:<@a,@b:c@d>\n",
		"EHLO x\r\nAUTH PLAIN\r\n*\r\nAUTH LOGIN dXNlcg==\r\n=\r\n",
		"EHLO x\r\nMAIL FROM:<a@b.c> SIZE=1 BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<\"x y\"@[IPv6:::1]>\r\n",
		"\x00\xff\r\nGET / HTTP/1.1\r\n",
		"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<alice@mail.test>\r\nDATA\r\na\n.\nb\r\n.\r\n",
	} {
		f.Add([]byte(s))
	}
	ts := startServer(f, nil)
	l := &listener{cfg: ts.cfg.Listeners[3]} // trusted-local: AUTH reachable without TLS
	f.Fuzz(func(t *testing.T, in []byte) {
		srvConn, cliConn := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			ss := newSession(ts.srv, srvConn, l, ts.srv.localAddrForFuzz(), "fuzz")
			ss.run(context.Background())
			srvConn.Close()
		}()
		go io.Copy(io.Discard, cliConn)
		cliConn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		cliConn.Write(in)
		cliConn.Write([]byte("\r\n.\r\nQUIT\r\n"))
		cliConn.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("session did not end for input %q", in)
		}
	})
}

// localAddrForFuzz is the client address used by in-memory test sessions.
func (s *Server) localAddrForFuzz() netip.Addr { return netip.MustParseAddr("192.0.2.7") }
