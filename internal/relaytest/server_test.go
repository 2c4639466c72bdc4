package relaytest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// testServer is a tiny SMTP server for the tests, deliberately permissive
// unless told otherwise: rcpt decides the reply to each RCPT TO path (the
// text between the angle brackets, verbatim).
type testServer struct {
	t        testing.TB
	ln       net.Listener
	name     string
	banner   string // full banner line; "" = "220 NAME ESMTP test"
	silent   bool   // never send a banner
	implicit bool   // TLS from the first byte (needs tls)
	tls      *tls.Config
	utf8     bool
	authUser string // AUTH PLAIN with authUser/authPass succeeds
	authPass string
	authAny  bool // every AUTH succeeds
	// rcpt returns the reply line to RCPT TO:<path>; authed says whether the
	// session authenticated.
	rcpt func(path string, authed bool) string
	// dataReply is the reply after the message ("" = 250).
	dataReply string
	// dataCmdReply, if set, answers the DATA command instead of 354 (no
	// message follows).
	dataCmdReply string
	// hangupAfter closes with 421 after this many error replies (0 = never).
	hangupAfter int

	mu       sync.Mutex
	rcpts    []string // every RCPT TO path received
	mails    []string // every MAIL FROM line received
	messages []string
	conns    int
	maxErrs  int // most error replies seen on one connection
}

func newTestServer(t testing.TB, s *testServer) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.t, s.ln = t, ln
	if s.name == "" {
		s.name = "mx.test-server.example"
	}
	if s.rcpt == nil {
		s.rcpt = func(string, bool) string { return "250 2.1.5 ok" }
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
			go s.serve(c)
		}
	}()
	return s
}

func (s *testServer) addr() string { return s.ln.Addr().String() }

func (s *testServer) serve(nc net.Conn) {
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(time.Minute))
	if s.implicit {
		tc := tls.Server(nc, s.tls)
		if tc.Handshake() != nil {
			return
		}
		nc = tc
	}
	if s.silent {
		buf := make([]byte, 1)
		nc.Read(buf)
		return
	}
	r := bufio.NewReader(nc)
	errs, authed := 0, false
	defer func() {
		s.mu.Lock()
		s.maxErrs = max(s.maxErrs, errs)
		s.mu.Unlock()
	}()
	reply := func(lines ...string) bool {
		for _, l := range lines {
			if _, err := nc.Write([]byte(l + "\r\n")); err != nil {
				return false
			}
		}
		last := lines[len(lines)-1]
		if last[0] == '4' || last[0] == '5' {
			errs++
			if s.hangupAfter > 0 && errs >= s.hangupAfter {
				nc.Write([]byte("421 4.7.0 too many errors\r\n"))
				return false
			}
		}
		return true
	}
	banner := s.banner
	if banner == "" {
		banner = "220 " + s.name + " ESMTP test"
	}
	if !reply(banner) || banner[0] != '2' {
		return
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		ok := true
		switch strings.ToUpper(verb) {
		case "EHLO":
			ext := []string{"250-" + s.name + " hello", "250-PIPELINING"}
			if s.tls != nil {
				if _, isTLS := nc.(*tls.Conn); !isTLS {
					ext = append(ext, "250-STARTTLS")
				}
			}
			if s.utf8 {
				ext = append(ext, "250-SMTPUTF8")
			}
			ext = append(ext, "250-AUTH PLAIN LOGIN", "250 8BITMIME")
			ok = reply(ext...)
		case "HELO":
			ok = reply("250 " + s.name)
		case "STARTTLS":
			if s.tls == nil {
				ok = reply("502 5.5.1 no STARTTLS")
				break
			}
			reply("220 2.0.0 go ahead")
			tc := tls.Server(nc, s.tls)
			if tc.Handshake() != nil {
				return
			}
			nc, r = tc, bufio.NewReader(tc)
		case "AUTH":
			mech, ir, _ := strings.Cut(arg, " ")
			if !strings.EqualFold(mech, "PLAIN") {
				ok = reply("504 5.5.4 only PLAIN")
				break
			}
			b, _ := base64.StdEncoding.DecodeString(ir)
			parts := strings.Split(string(b), "\x00")
			if s.authAny || len(parts) == 3 && s.authUser != "" && parts[1] == s.authUser && parts[2] == s.authPass {
				authed = true
				ok = reply("235 2.7.0 authenticated")
			} else {
				ok = reply("535 5.7.8 authentication failed")
			}
		case "MAIL":
			s.mu.Lock()
			s.mails = append(s.mails, line)
			s.mu.Unlock()
			ok = reply("250 2.1.0 ok")
		case "RCPT":
			path := strings.TrimPrefix(line, "RCPT TO:<")
			path = strings.TrimSuffix(path, ">")
			s.mu.Lock()
			s.rcpts = append(s.rcpts, path)
			s.mu.Unlock()
			ok = reply(s.rcpt(path, authed))
		case "DATA":
			if s.dataCmdReply != "" {
				ok = reply(s.dataCmdReply)
				break
			}
			reply("354 go ahead")
			var msg strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				msg.WriteString(strings.TrimPrefix(l, "."))
			}
			s.mu.Lock()
			s.messages = append(s.messages, msg.String())
			s.mu.Unlock()
			if s.dataReply != "" {
				ok = reply(s.dataReply)
			} else {
				ok = reply("250 2.0.0 queued")
			}
		case "RSET":
			ok = reply("250 2.0.0 ok")
		case "QUIT":
			reply("221 2.0.0 bye")
			return
		default:
			ok = reply("500 5.5.2 unknown command")
		}
		if !ok {
			return
		}
	}
}

// selfSigned makes a throwaway certificate for the test server's STARTTLS.
func selfSigned(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mx.test-server.example"},
		DNSNames:     []string{"mx.test-server.example"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}
