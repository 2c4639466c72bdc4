package delivertest

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
)

// Dropper is an SMTP peer that accepts the envelope and DATA, reads a part
// of the message and then closes the connection without replying: a peer
// that drops mid-DATA.
type Dropper struct {
	Addr  string
	Drops atomic.Int64
}

// StartDropper starts a Dropper on loopback.
func StartDropper(t testing.TB) *Dropper {
	t.Helper()
	d := &Dropper{}
	d.Addr = serveLoopback(t, d.serve)
	return d
}

// serveLoopback accepts connections on a loopback port until the test
// ends, handing each to serve on its own goroutine, and returns the address.
func serveLoopback(t testing.TB, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

func (d *Dropper) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	io.WriteString(c, "220 dropper.test ESMTP\r\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			io.WriteString(c, "250-dropper.test\r\n250 8BITMIME\r\n")
		case strings.HasPrefix(cmd, "DATA"):
			io.WriteString(c, "354 go ahead\r\n")
			// Read the first line of the message, then vanish.
			r.ReadString('\n')
			d.Drops.Add(1)
			return
		case strings.HasPrefix(cmd, "QUIT"):
			io.WriteString(c, "221 bye\r\n")
			return
		default:
			io.WriteString(c, "250 ok\r\n")
		}
	}
}

// BadTLS is an SMTP peer that offers STARTTLS but answers the TLS
// handshake with garbage; without STARTTLS it accepts mail normally.
type BadTLS struct {
	Addr      string
	Handshake atomic.Int64 // STARTTLS attempts
	Accepted  atomic.Int64 // messages accepted in clear text
}

// StartBadTLS starts a BadTLS peer on loopback.
func StartBadTLS(t testing.TB) *BadTLS {
	t.Helper()
	b := &BadTLS{}
	b.Addr = serveLoopback(t, b.serve)
	return b
}

func (b *BadTLS) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	io.WriteString(c, "220 badtls.test ESMTP\r\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			io.WriteString(c, "250-badtls.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n")
		case cmd == "STARTTLS":
			b.Handshake.Add(1)
			io.WriteString(c, "220 2.0.0 go ahead\r\nthis is not TLS at all\r\n")
			return
		case cmd == "DATA":
			io.WriteString(c, "354 go ahead\r\n")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			b.Accepted.Add(1)
			io.WriteString(c, "250 2.0.0 queued\r\n")
		case cmd == "QUIT":
			io.WriteString(c, "221 bye\r\n")
			return
		default:
			io.WriteString(c, "250 2.0.0 ok\r\n")
		}
	}
}

// StartRejecter starts on loopback an SMTP peer that refuses every
// recipient with 550 5.1.1, so that a message for it bounces, and returns
// its address.
func StartRejecter(t testing.TB) string {
	t.Helper()
	return serveLoopback(t, func(c net.Conn) {
		defer c.Close()
		r := bufio.NewReader(c)
		io.WriteString(c, "220 reject.test ESMTP\r\n")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			cmd := strings.ToUpper(strings.TrimSpace(line))
			switch {
			case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
				io.WriteString(c, "250 reject.test\r\n")
			case strings.HasPrefix(cmd, "RCPT"):
				io.WriteString(c, "550 5.1.1 no such user here\r\n")
			case strings.HasPrefix(cmd, "QUIT"):
				io.WriteString(c, "221 bye\r\n")
				return
			default:
				io.WriteString(c, "250 ok\r\n")
			}
		}
	})
}
