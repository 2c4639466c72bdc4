package sasl_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xdg-go/scram"

	"github.com/relayguard/relayguard/internal/sasl"
)

// tlsPair is a real TLS connection over loopback TCP.
type tlsPair struct {
	client, server *tls.Conn
	cert           *x509.Certificate
}

func (p tlsPair) serverOpts() sasl.Options {
	st := p.server.ConnectionState()
	return sasl.Options{TLS: &st, Certificate: p.cert, Hostname: "mx.test"}
}

func (p tlsPair) clientState() *tls.ConnectionState {
	st := p.client.ConnectionState()
	return &st
}

var testCert = func() func(t *testing.T) (tls.Certificate, *x509.Certificate) {
	var c tls.Certificate
	var leaf *x509.Certificate
	return func(t *testing.T) (tls.Certificate, *x509.Certificate) {
		if leaf != nil {
			return c, leaf
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "mx.test"},
			DNSNames:     []string{"mx.test"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ = x509.ParseCertificate(der)
		c = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
		return c, leaf
	}
}()

// newTLSPair opens a TLS connection on 127.0.0.1 (maxVersion 0: TLS 1.3).
func newTLSPair(t *testing.T, maxVersion uint16) tlsPair {
	t.Helper()
	cert, leaf := testCert(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: maxVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		tc := c.(*tls.Conn)
		if tc.Handshake() != nil {
			accepted <- nil
			return
		}
		accepted <- tc
	}()
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	cl, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "mx.test", MaxVersion: maxVersion})
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if srv == nil {
		t.Fatal("server handshake failed")
	}
	t.Cleanup(func() { cl.Close(); srv.Close() })
	return tlsPair{client: cl, server: srv, cert: leaf}
}

// serveAuth runs a Server over conn with RFC 4954-like framing: the client
// sends its initial response ("=" empty, "-" none) and then one base64 line
// per challenge; the server answers "334 <base64>", "235" or "535 <error>".
func serveAuth(conn net.Conn, srv sasl.Server) error {
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	var resp []byte
	switch line = strings.TrimRight(line, "\r\n"); line {
	case "-":
		resp = nil
	case "=":
		resp = []byte{}
	default:
		if resp, err = base64.StdEncoding.DecodeString(line); err != nil {
			return err
		}
	}
	for {
		ch, done, err := srv.Next(context.Background(), resp)
		if err != nil {
			fmt.Fprintf(conn, "535 %s\r\n", strings.ReplaceAll(err.Error(), "\n", " "))
			return err
		}
		if done {
			fmt.Fprintf(conn, "235\r\n")
			return nil
		}
		fmt.Fprintf(conn, "334 %s\r\n", base64.StdEncoding.EncodeToString(ch))
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if resp, err = base64.StdEncoding.DecodeString(strings.TrimRight(line, "\r\n")); err != nil {
			return err
		}
	}
}

// scramClient runs the xdg-go/scram client side over conn and returns the
// final reply line and the server-first-message it saw.
func scramClient(t *testing.T, conn net.Conn, conv *scram.ClientConversation) (reply, serverFirst string) {
	t.Helper()
	first, err := conv.Step("")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "%s\r\n", base64.StdEncoding.EncodeToString([]byte(first)))
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		line = strings.TrimRight(line, "\r\n")
		ch, ok := strings.CutPrefix(line, "334 ")
		if !ok {
			return line, serverFirst
		}
		dec, err := base64.StdEncoding.DecodeString(ch)
		if err != nil {
			t.Fatal(err)
		}
		if serverFirst == "" {
			serverFirst = string(dec)
		}
		out, err := conv.Step(string(dec))
		if err != nil {
			t.Fatalf("client step on %q: %v", dec, err)
		}
		fmt.Fprintf(conn, "%s\r\n", base64.StdEncoding.EncodeToString([]byte(out)))
	}
}

type scramCase struct {
	name   string
	mech   string
	user   string
	pw     string
	conv   func(c *scram.Client, p tlsPair) *scram.ClientConversation
	opt    func(p tlsPair) sasl.Options
	err    error
	id     string
	maxTLS uint16
}

func noBinding(c *scram.Client, _ tlsPair) *scram.ClientConversation { return c.NewConversation() }

func exporter(c *scram.Client, p tlsPair) *scram.ClientConversation {
	cb, err := scram.NewTLSExporterBinding(p.clientState())
	if err != nil {
		panic(err)
	}
	return c.NewConversationWithChannelBinding(cb)
}

func endPoint(c *scram.Client, p tlsPair) *scram.ClientConversation {
	// On the client, PeerCertificates[0] is the server's certificate.
	cb, err := scram.NewTLSServerEndpointBinding(p.clientState())
	if err != nil {
		panic(err)
	}
	return c.NewConversationWithChannelBinding(cb)
}

func tlsOpts(p tlsPair) sasl.Options { return p.serverOpts() }

func TestSCRAM(t *testing.T) {
	db := testDB(t)
	var other tlsPair // a second connection, for a binding of the wrong channel
	cases := []scramCase{
		{name: "plaintext", mech: "SCRAM-SHA-256", user: "alice", pw: alicePW, conv: noBinding, id: "alice"},
		{name: "plaintext wrong password", mech: "SCRAM-SHA-256", user: "alice", pw: "guess", conv: noBinding, err: sasl.ErrAuthFailed},
		{name: "plaintext unknown user", mech: "SCRAM-SHA-256", user: "mallory", pw: "guess", conv: noBinding, err: sasl.ErrAuthFailed},
		{name: "suspended user", mech: "SCRAM-SHA-256", user: "sam", pw: samPW, conv: noBinding, err: sasl.ErrAuthFailed},
		{name: "SASLprep of the password", mech: "SCRAM-SHA-256", user: "uni", pw: uniPW, conv: noBinding, id: "uni"},
		{name: "case variant", mech: "SCRAM-SHA-256", user: "BOB@example.COM", pw: "bobpw", conv: noBinding, id: "bob@example.com"},
		{name: "TLS without binding, PLUS not advertised", mech: "SCRAM-SHA-256", user: "alice", pw: alicePW, conv: noBinding, opt: tlsOpts, id: "alice"},
		{name: "PLUS tls-exporter", mech: "SCRAM-SHA-256-PLUS", user: "alice", pw: alicePW, conv: exporter, opt: tlsOpts, id: "alice"},
		{name: "PLUS tls-exporter TLS 1.2 (EMS)", mech: "SCRAM-SHA-256-PLUS", user: "alice", pw: alicePW, conv: exporter, opt: tlsOpts, id: "alice", maxTLS: tls.VersionTLS12},
		{name: "PLUS tls-server-end-point", mech: "SCRAM-SHA-256-PLUS", user: "alice", pw: alicePW, conv: endPoint, opt: tlsOpts, id: "alice"},
		{name: "PLUS wrong password", mech: "SCRAM-SHA-256-PLUS", user: "alice", pw: "guess", conv: exporter, opt: tlsOpts, err: sasl.ErrAuthFailed},
		{name: "PLUS unknown user", mech: "SCRAM-SHA-256-PLUS", user: "mallory", pw: "guess", conv: exporter, opt: tlsOpts, err: sasl.ErrAuthFailed},
		{name: "PLUS binding of another connection", mech: "SCRAM-SHA-256-PLUS", user: "alice", pw: alicePW,
			conv: func(c *scram.Client, _ tlsPair) *scram.ClientConversation { return exporter(c, other) }, opt: tlsOpts, err: sasl.ErrAuthFailed},
		{name: "PLUS end-point of another certificate", mech: "SCRAM-SHA-256-PLUS", user: "alice", pw: alicePW,
			conv: func(c *scram.Client, _ tlsPair) *scram.ClientConversation {
				return c.NewConversationWithChannelBinding(scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: make([]byte, 32)})
			}, opt: tlsOpts, err: sasl.ErrAuthFailed},
		{name: "PLUS without end-point certificate", mech: "SCRAM-SHA-256-PLUS", user: "alice", pw: alicePW, conv: endPoint,
			opt: func(p tlsPair) sasl.Options { o := p.serverOpts(); o.Certificate = nil; return o }, err: sasl.ErrAuthFailed},
		{name: "PLUS with tls-unique", mech: "SCRAM-SHA-256-PLUS", user: "alice", pw: alicePW,
			conv: func(c *scram.Client, _ tlsPair) *scram.ClientConversation {
				return c.NewConversationWithChannelBinding(scram.NewTLSUniqueBinding([]byte("0123456789ab")))
			}, opt: tlsOpts, err: sasl.ErrAuthFailed},
		{name: "PLUS with flag n", mech: "SCRAM-SHA-256-PLUS", user: "alice", pw: alicePW, conv: noBinding, opt: tlsOpts, err: sasl.ErrAuthFailed},
		{name: "binding requested with SCRAM-SHA-256", mech: "SCRAM-SHA-256", user: "alice", pw: alicePW, conv: exporter, opt: tlsOpts, err: sasl.ErrAuthFailed},
		// RFC 5802 §6: "y" means the client supports binding but did not
		// see PLUS; if we offered it, the list was tampered with.
		{name: "downgrade: y while PLUS offered", mech: "SCRAM-SHA-256", user: "alice", pw: alicePW,
			conv: func(c *scram.Client, _ tlsPair) *scram.ClientConversation {
				return c.NewConversationAdvertisingChannelBinding()
			},
			opt: tlsOpts, err: sasl.ErrAuthFailed},
		{name: "y while PLUS not advertised", mech: "SCRAM-SHA-256", user: "alice", pw: alicePW,
			conv: func(c *scram.Client, _ tlsPair) *scram.ClientConversation {
				return c.NewConversationAdvertisingChannelBinding()
			},
			opt: func(p tlsPair) sasl.Options {
				o := p.serverOpts()
				o.Advertised = []string{"SCRAM-SHA-256", "PLAIN"}
				return o
			}, id: "alice"},
		{name: "y on plaintext", mech: "SCRAM-SHA-256", user: "alice", pw: alicePW,
			conv: func(c *scram.Client, _ tlsPair) *scram.ClientConversation {
				return c.NewConversationAdvertisingChannelBinding()
			}, id: "alice"},
		{name: "authzid of another user", mech: "SCRAM-SHA-256", user: "alice", pw: alicePW,
			conv: func(_ *scram.Client, _ tlsPair) *scram.ClientConversation {
				c, _ := scram.SHA256.NewClient("alice", alicePW, "bob@example.com")
				return c.NewConversation()
			}, err: sasl.ErrAuthFailed},
		{name: "authzid equal to user", mech: "SCRAM-SHA-256", user: "alice", pw: alicePW,
			conv: func(_ *scram.Client, _ tlsPair) *scram.ClientConversation {
				c, _ := scram.SHA256.NewClient("alice", alicePW, "alice")
				return c.NewConversation()
			}, id: "alice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newTLSPair(t, c.maxTLS)
			other = newTLSPair(t, 0)
			opt := sasl.Options{}
			if c.opt != nil {
				opt = c.opt(p)
			}
			srv, err := sasl.New(c.mech, db, opt)
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() { errc <- serveAuth(p.server, srv) }()
			cl, err := scram.SHA256.NewClient(c.user, c.pw, "")
			if err != nil {
				t.Fatal(err)
			}
			conv := c.conv(cl, p)
			reply, _ := scramClient(t, p.client, conv)
			serr := <-errc
			if !errors.Is(serr, c.err) || (c.err == nil) != (serr == nil) {
				t.Fatalf("server error %v, want %v (reply %q)", serr, c.err, reply)
			}
			if c.err == nil {
				// Mutual authentication: the client checked our
				// server signature.
				if reply != "235" || !conv.Valid() {
					t.Fatalf("reply %q, client valid=%v", reply, conv.Valid())
				}
			}
			if srv.Identity() != c.id {
				t.Fatalf("Identity() = %q, want %q", srv.Identity(), c.id)
			}
			if srv.Attempted() != c.user {
				t.Fatalf("Attempted() = %q, want %q", srv.Attempted(), c.user)
			}
		})
	}
}

// TestSCRAMUnknownUserLooksReal checks that an unknown user gets a
// server-first-message shaped like a real one, with a salt that stays the
// same across attempts (a random one would give the user away).
func TestSCRAMUnknownUserLooksReal(t *testing.T) {
	db := testDB(t)
	first := func(user string) (salt []byte, iters string) {
		srv := newServer(t, "SCRAM-SHA-256", db, sasl.Options{})
		cl, _ := scram.SHA256.NewClient(user, "x", "")
		c1, _ := cl.NewConversation().Step("")
		s1, done, err := srv.Next(context.Background(), []byte(c1))
		if err != nil || done {
			t.Fatalf("%s: server-first: done=%v err=%v", user, done, err)
		}
		f := strings.Split(string(s1), ",")
		if len(f) != 3 || !strings.HasPrefix(f[1], "s=") || !strings.HasPrefix(f[2], "i=") {
			t.Fatalf("server-first %q", s1)
		}
		salt, err = base64.StdEncoding.DecodeString(f[1][2:])
		if err != nil {
			t.Fatal(err)
		}
		return salt, f[2]
	}
	realSalt, realIters := first("alice")
	s1, i1 := first("mallory")
	s2, i2 := first("mallory")
	s3, _ := first("MALLORY")
	s4, _ := first("trent")
	if string(s1) != string(s2) || string(s1) != string(s3) || i1 != i2 {
		t.Fatal("unknown user's salt changes between attempts")
	}
	if string(s1) == string(s4) {
		t.Fatal("two unknown users share a salt")
	}
	if len(s1) != len(realSalt) || i1 != realIters {
		t.Fatalf("decoy salt %d bytes %s, real %d bytes %s", len(s1), i1, len(realSalt), realIters)
	}
	if r2, _ := first("alice"); string(r2) != string(realSalt) {
		t.Fatal("real salt not stable")
	}
}

func TestSCRAMMalformed(t *testing.T) {
	db := testDB(t)
	cl, _ := scram.SHA256.NewClient("alice", alicePW, "")
	for _, c := range []struct {
		name   string
		first  string
		final  string // "" : not reached
		expect error
	}{
		{"garbage", "hello", "", sasl.ErrMalformed},
		{"empty", "", "", sasl.ErrMalformed},
		{"bad flag", "x,,n=alice,r=abc", "", sasl.ErrMalformed},
		{"bad binding type name", "p=,,n=alice,r=abc", "", sasl.ErrMalformed},
		{"no n=", "n,,u=alice,r=abc", "", sasl.ErrMalformed},
		{"bad escape", "n,,n=al=ice,r=abc", "", sasl.ErrMalformed},
		{"empty nonce", "n,,n=alice,r=", "", sasl.ErrMalformed},
		{"extension", "n,,m=ext,n=alice,r=abc", "", sasl.ErrMalformed},
		{"bad authzid", "n,b=x,n=alice,r=abc", "", sasl.ErrMalformed},
		{"final not base64", "n,,n=alice,r=abc", "c=!!!,r=abc,p=xyz", sasl.ErrMalformed},
		{"final too short", "n,,n=alice,r=abc", "c=biws", sasl.ErrMalformed},
		{"final wrong nonce", "n,,n=alice,r=abc", "c=biws,r=abcdef,p=" + base64.StdEncoding.EncodeToString(make([]byte, 32)), sasl.ErrAuthFailed},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := newServer(t, "SCRAM-SHA-256", db, sasl.Options{})
			_, done, err := srv.Next(context.Background(), []byte(c.first))
			if c.final != "" {
				if err != nil || done {
					t.Fatalf("first: done=%v err=%v", done, err)
				}
				_, done, err = srv.Next(context.Background(), []byte(c.final))
			}
			if !done || !errors.Is(err, c.expect) {
				t.Fatalf("done=%v err=%v, want %v", done, err, c.expect)
			}
		})
	}
	// A non-empty answer to the server-final-message is malformed.
	srv := newServer(t, "SCRAM-SHA-256", db, sasl.Options{})
	conv := cl.NewConversation()
	c1, _ := conv.Step("")
	s1, _, _ := srv.Next(context.Background(), []byte(c1))
	c2, _ := conv.Step(string(s1))
	if _, done, err := srv.Next(context.Background(), []byte(c2)); done || err != nil {
		t.Fatalf("final: done=%v err=%v", done, err)
	}
	if _, done, err := srv.Next(context.Background(), []byte("extra")); !done || !errors.Is(err, sasl.ErrMalformed) || srv.Identity() != "" {
		t.Fatalf("ack: done=%v err=%v id=%q", done, err, srv.Identity())
	}
}
