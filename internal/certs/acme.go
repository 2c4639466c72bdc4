package certs

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/relayguard/relayguard/internal/safeio"
)

// ACME challenge types (RFC 8555 §8.3, RFC 8737).
const (
	ChallengeTLSALPN = "tls-alpn-01"
	ChallengeHTTP    = "http-01"
)

// ACMEOptions configure the ACME client.
type ACMEOptions struct {
	Directory string   // directory URL of the CA
	Email     string   // account contact; "" for none
	Names     []string // DNS names of the certificate, the first is its subject
	Dir       string   // where the account key lives (DATA_DIR/acme)
	CertFile  string   // where the certificate chain is written
	KeyFile   string   // where its private key is written
	Challenge string   // ChallengeTLSALPN or ChallengeHTTP
	Listen    string   // challenge listener: host:port (443 for tls-alpn-01, 80 for http-01)
	// HTTPClient talks to the CA; set it to trust a private CA's roots.
	HTTPClient *http.Client
	// RenewBefore renews when less than this is left of the certificate's
	// validity; 0: when a third of it is left.
	RenewBefore time.Duration
	// RetryMin is the first wait after a failed order, doubled up to an hour.
	RetryMin time.Duration
	Log      *slog.Logger
}

// ACME obtains and renews the server certificate from an ACME CA (RFC
// 8555), writes it to CertFile/KeyFile and has the Provider use them, so
// the new certificate is in use at the next TLS handshake.
//
// The order flow is written here on golang.org/x/crypto/acme rather than
// with its autocert package because autocert obtains a certificate lazily,
// during the first TLS handshake that names the host in SNI: SMTP clients
// often send no SNI, the first STARTTLS would wait for the whole issuance,
// and its renewal schedule (with an hour of jitter) cannot be driven.
// Here the certificate is ordered at start, kept in files the operator can
// see, and renewed on a schedule, while the SMTP listeners go on serving
// the previous certificate (or the self-signed one) until it is ready.
type ACME struct {
	opt    ACMEOptions
	p      *Provider
	log    *slog.Logger
	client *acme.Client

	mu        sync.Mutex
	http01    map[string]string           // token path -> key authorization
	alpnCerts map[string]*tls.Certificate // name -> challenge certificate
	ln        net.Listener
	srv       *http.Server
	lastOK    time.Time

	// conns (the challenge listener's goroutines: accept loop, HTTP
	// server, handshakes) are waited for by closeListener; stopConns
	// ends the handshakes in progress.
	conns     sync.WaitGroup
	stopConns context.CancelFunc
}

// NewACME prepares the ACME client; Run starts it.
func NewACME(opt ACMEOptions, p *Provider) (*ACME, error) {
	if len(opt.Names) == 0 {
		return nil, errors.New("acme: no names to order a certificate for")
	}
	switch opt.Challenge {
	case ChallengeTLSALPN, ChallengeHTTP:
	default:
		return nil, fmt.Errorf("acme: challenge %q: want tls-alpn-01 or http-01", opt.Challenge)
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.RetryMin <= 0 {
		opt.RetryMin = time.Minute
	}
	if err := os.MkdirAll(opt.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	key, err := accountKey(filepath.Join(opt.Dir, "account.key"))
	if err != nil {
		return nil, err
	}
	return &ACME{
		opt: opt, p: p, log: opt.Log,
		client:    &acme.Client{Key: key, DirectoryURL: opt.Directory, HTTPClient: opt.HTTPClient, UserAgent: "relayguard"},
		http01:    map[string]string{},
		alpnCerts: map[string]*tls.Certificate{},
	}, nil
}

// accountKey loads the ACME account key, making one on first use.
func accountKey(path string) (crypto.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("acme: %s: no PEM block", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("acme: %s: %w", path, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("acme: %s: not a signing key", path)
		}
		return s, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("acme: %w", err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("acme: account key: %w", err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	if err := safeio.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	return k, nil
}

// Run serves the challenges and keeps the certificate current until ctx
// ends. It returns early only if the challenge listener cannot be opened
// (call Listen first to find out before anything else starts).
func (a *ACME) Run(ctx context.Context) error {
	if err := a.Listen(); err != nil {
		return err
	}
	defer a.closeListener()
	wait := a.opt.RetryMin
	for {
		due := a.due()
		if d := time.Until(due); d > 0 {
			a.log.Info("acme: certificate is current", "names", a.opt.Names, "renew_at", due.UTC().Format(time.RFC3339))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(d):
			}
		}
		err := a.obtain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			a.log.Error("acme: ordering the certificate failed; keeping the certificate in use", "names", a.opt.Names,
				"directory", a.opt.Directory, "err", err, "retry_in", wait)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			wait = min(2*wait, time.Hour)
			continue
		}
		wait = a.opt.RetryMin
	}
}

// due is when the certificate in the files must be renewed: now when
// there is none, it is not ours (names), or it does not load.
func (a *ACME) due() time.Time {
	c, err := loadPair(a.opt.CertFile, a.opt.KeyFile)
	if err != nil || !covers(c.Leaf, a.opt.Names) {
		return time.Time{}
	}
	before := a.opt.RenewBefore
	if before <= 0 {
		before = c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) / 3
	}
	at := c.Leaf.NotAfter.Add(-before)
	// Never order twice within an hour in one process, whatever the
	// validity (a CA issuing very short certificates, a RenewBefore longer
	// than the validity): CAs rate-limit.
	a.mu.Lock()
	if floor := a.lastOK.Add(time.Hour); !a.lastOK.IsZero() && at.Before(floor) {
		at = floor
	}
	a.mu.Unlock()
	return at
}

func covers(leaf *x509.Certificate, names []string) bool {
	for _, n := range names {
		if leaf.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

// obtain runs one order (RFC 8555 §7.4): account, authorizations through
// the configured challenge, finalisation with a new key, certificate.
func (a *ACME) obtain(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	acct := &acme.Account{}
	if a.opt.Email != "" {
		acct.Contact = []string{"mailto:" + a.opt.Email}
	}
	if _, err := a.client.Register(ctx, acct, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return fmt.Errorf("account: %w", err)
	}
	order, err := a.client.AuthorizeOrder(ctx, acme.DomainIDs(a.opt.Names...))
	if err != nil {
		return fmt.Errorf("new order: %w", err)
	}
	for _, u := range order.AuthzURLs {
		if err := a.authorize(ctx, u); err != nil {
			return err
		}
	}
	order, err = a.client.WaitOrder(ctx, order.URI)
	if err != nil {
		return fmt.Errorf("order: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: a.opt.Names}, key)
	if err != nil {
		return err
	}
	chain, _, err := a.client.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	if err := a.store(key, chain); err != nil {
		return err
	}
	a.mu.Lock()
	a.lastOK = time.Now()
	a.mu.Unlock()
	leaf, _ := x509.ParseCertificate(chain[0])
	a.log.Info("acme: certificate obtained", "names", a.opt.Names, "serial", leaf.SerialNumber.String(),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "cert", a.opt.CertFile)
	if a.p != nil {
		if err := a.p.Use(a.opt.CertFile, a.opt.KeyFile); err != nil {
			return fmt.Errorf("the new certificate does not load: %w", err)
		}
	}
	return nil
}

// authorize satisfies one authorization with the configured challenge.
func (a *ACME) authorize(ctx context.Context, url string) error {
	z, err := a.client.GetAuthorization(ctx, url)
	if err != nil {
		return fmt.Errorf("authorization: %w", err)
	}
	if z.Status == acme.StatusValid {
		return nil
	}
	var chal *acme.Challenge
	for _, c := range z.Challenges {
		if c.Type == a.opt.Challenge {
			chal = c
		}
	}
	if chal == nil {
		return fmt.Errorf("the CA offers no %s challenge for %s", a.opt.Challenge, z.Identifier.Value)
	}
	name := z.Identifier.Value
	switch chal.Type {
	case ChallengeTLSALPN:
		cert, err := a.client.TLSALPN01ChallengeCert(chal.Token, name)
		if err != nil {
			return err
		}
		a.mu.Lock()
		a.alpnCerts[name] = &cert
		a.mu.Unlock()
		defer func() { a.mu.Lock(); delete(a.alpnCerts, name); a.mu.Unlock() }()
	case ChallengeHTTP:
		resp, err := a.client.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return err
		}
		path := a.client.HTTP01ChallengePath(chal.Token)
		a.mu.Lock()
		a.http01[path] = resp
		a.mu.Unlock()
		defer func() { a.mu.Lock(); delete(a.http01, path); a.mu.Unlock() }()
	}
	if _, err := a.client.Accept(ctx, chal); err != nil {
		return fmt.Errorf("%s for %s: %w", chal.Type, name, err)
	}
	if _, err := a.client.WaitAuthorization(ctx, z.URI); err != nil {
		return fmt.Errorf("%s for %s: %w", chal.Type, name, err)
	}
	return nil
}

// store writes the key, then the chain, each atomically: a reader never
// sees a chain without its key (Provider refuses a mismatched pair anyway).
func (a *ACME) store(key *ecdsa.PrivateKey, chain [][]byte) error {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	var certPEM []byte
	for _, der := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{a.opt.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600}, {a.opt.CertFile, certPEM, 0o644}} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o750); err != nil {
			return fmt.Errorf("acme: %w", err)
		}
		if err := safeio.WriteFile(f.path, f.data, f.mode); err != nil {
			return fmt.Errorf("acme: %w", err)
		}
	}
	return nil
}

// Listen opens the challenge listener, if it is not open yet: a TLS
// listener that answers only tls-alpn-01 handshakes (RFC 8737 §3), or an
// HTTP server that answers only /.well-known/acme-challenge/ (RFC 8555
// §8.3).
func (a *ACME) Listen() error {
	a.mu.Lock()
	open := a.ln != nil
	a.mu.Unlock()
	if open {
		return nil
	}
	ln, err := net.Listen("tcp", a.opt.Listen)
	if err != nil {
		return fmt.Errorf("acme: %s challenge listener %s: %w", a.opt.Challenge, a.opt.Listen, err)
	}
	// The handshakes end when the listener is closed (closeListener),
	// whoever called Listen.
	hctx, stop := context.WithCancel(context.Background())
	a.mu.Lock()
	a.ln, a.stopConns = ln, stop
	a.mu.Unlock()
	if a.opt.Challenge == ChallengeHTTP {
		a.srv = &http.Server{Handler: http.HandlerFunc(a.serveHTTP01), ReadHeaderTimeout: 10 * time.Second}
		a.conns.Go(func() { a.srv.Serve(ln) })
		return nil
	}
	cfg := &tls.Config{
		NextProtos: []string{acme.ALPNProto},
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if len(h.SupportedProtos) != 1 || h.SupportedProtos[0] != acme.ALPNProto {
				return nil, errors.New("acme: this listener only answers tls-alpn-01 challenges")
			}
			a.mu.Lock()
			defer a.mu.Unlock()
			if c := a.alpnCerts[strings.ToLower(strings.TrimSuffix(h.ServerName, "."))]; c != nil {
				return c, nil
			}
			return nil, fmt.Errorf("acme: no challenge pending for %q", h.ServerName)
		},
	}
	a.conns.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.conns.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tls.Server(c, cfg).HandshakeContext(hctx)
			})
		}
	})
	return nil
}

func (a *ACME) serveHTTP01(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	resp, ok := a.http01[r.URL.Path]
	a.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write([]byte(resp))
}

// Addr is the challenge listener's address (once Run started it).
func (a *ACME) Addr() net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ln == nil {
		return nil
	}
	return a.ln.Addr()
}

// closeListener closes the challenge listener and waits for its
// goroutines.
func (a *ACME) closeListener() {
	if a.srv != nil {
		a.srv.Close()
	}
	a.mu.Lock()
	if a.ln != nil {
		a.ln.Close()
		a.ln = nil
		a.stopConns()
	}
	a.mu.Unlock()
	a.conns.Wait()
}
