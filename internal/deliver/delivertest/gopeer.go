package delivertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SelfSigned makes a certificate for names (DNS names or IPs) and a pool
// that trusts it.
func SelfSigned(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// PeerMessage is a message received by a GoPeer.
type PeerMessage struct {
	From  string
	Rcpts []string
	Data  []byte
	TLS   bool
	User  string // authenticated user
	UTF8  bool   // MAIL FROM had SMTPUTF8
	Body  string // MAIL FROM BODY= parameter
	Size  int64  // MAIL FROM SIZE= parameter
}

// GoPeer is an SMTP server built on emersion/go-smtp, for behaviours
// smtp-sink lacks: STARTTLS, AUTH, a SIZE limit.
type GoPeer struct {
	Addr string
	srv  *smtp.Server

	mu   sync.Mutex
	msgs []PeerMessage
	// Users maps AUTH usernames to passwords; empty: AUTH not offered.
	users map[string]string
	delay time.Duration
	// rcptLimit, rcptLimitReply: GoPeerOptions.RcptLimit, RcptLimitReply.
	rcptLimit      int
	rcptLimitReply *smtp.SMTPError
	cur            int // transactions in DATA now
	peak           int
}

// GoPeerOptions configure StartGoPeer.
type GoPeerOptions struct {
	Cert     *tls.Certificate // offer STARTTLS with it
	Users    map[string]string
	MaxBytes int64
	// DataDelay holds each message this long before accepting it, so that
	// concurrent deliveries overlap.
	DataDelay time.Duration
	// SMTPUTF8 announces RFC 6531 support.
	SMTPUTF8 bool
	// RcptLimit, with RcptLimitReply set, is how many recipients one
	// transaction takes: each further RCPT gets RcptLimitReply (a next
	// hop's per-transaction limit, RFC 5321 §4.5.3.1.8). 0 refuses all.
	RcptLimit      int
	RcptLimitReply *smtp.SMTPError
}

// StartGoPeer starts a GoPeer on loopback.
func StartGoPeer(t testing.TB, o GoPeerOptions) *GoPeer {
	t.Helper()
	p := &GoPeer{users: o.Users, delay: o.DataDelay, rcptLimit: o.RcptLimit, rcptLimitReply: o.RcptLimitReply}
	s := smtp.NewServer(p)
	s.Domain = "gopeer.test"
	s.ReadTimeout = 30 * time.Second
	s.WriteTimeout = 30 * time.Second
	s.MaxMessageBytes = o.MaxBytes
	s.EnableSMTPUTF8 = o.SMTPUTF8
	if o.Cert != nil {
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*o.Cert}}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Addr = ln.Addr().String()
	p.srv = s
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return p
}

// Messages returns what was received so far.
func (p *GoPeer) Messages() []PeerMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]PeerMessage(nil), p.msgs...)
}

// PeakConcurrency is the largest number of messages that were being
// received at the same time.
func (p *GoPeer) PeakConcurrency() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

// NewSession implements smtp.Backend.
func (p *GoPeer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &peerSession{p: p, c: c}, nil
}

type peerSession struct {
	p   *GoPeer
	c   *smtp.Conn
	cur PeerMessage
	usr string
}

func (s *peerSession) AuthMechanisms() []string {
	if len(s.p.users) == 0 {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *peerSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if pw, ok := s.p.users[user]; ok && pw == pass {
			s.usr = user
			return nil
		}
		return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
	}), nil
}

func (s *peerSession) Mail(from string, opts *smtp.MailOptions) error {
	if len(s.p.users) > 0 && s.usr == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	_, tlsOK := s.c.TLSConnectionState()
	s.cur = PeerMessage{From: from, TLS: tlsOK, User: s.usr}
	if opts != nil {
		s.cur.UTF8, s.cur.Body, s.cur.Size = opts.UTF8, string(opts.Body), opts.Size
	}
	return nil
}

func (s *peerSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.p.rcptLimitReply != nil && len(s.cur.Rcpts) >= s.p.rcptLimit {
		return s.p.rcptLimitReply
	}
	s.cur.Rcpts = append(s.cur.Rcpts, to)
	return nil
}

func (s *peerSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se
		}
		return err
	}
	s.cur.Data = b
	s.p.mu.Lock()
	s.p.cur++
	s.p.peak = max(s.p.peak, s.p.cur)
	s.p.mu.Unlock()
	time.Sleep(s.p.delay)
	s.p.mu.Lock()
	s.p.cur--
	s.p.msgs = append(s.p.msgs, s.cur)
	s.p.mu.Unlock()
	return nil
}

func (s *peerSession) Reset()        { s.cur = PeerMessage{} }
func (s *peerSession) Logout() error { return nil }
