package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Provider is the one owner of the server certificate in a process: every
// TLS listener (STARTTLS, implicit TLS) gets it through Config, and it is
// replaced without a restart when the files change on disk (a certbot
// renewal, found by Watch), when Reload is called (SIGHUP), or when the
// ACME client (ACME) wrote a new certificate. A replacement that does not
// load (a half-written file, a key that does not match) is refused and the
// certificate in use stays.
type Provider struct {
	certFile, keyFile string
	log               *slog.Logger

	cur atomic.Pointer[tls.Certificate]

	mu    sync.Mutex // serialises loads
	stamp stamp      // of the files last loaded (or last failed)
}

// stamp identifies a version of the two files: a rename (certbot's
// symlink switch, an atomic write) changes the inode, an in-place rewrite
// the size or the modification time.
type stamp struct {
	cert, key fileStamp
}

type fileStamp struct {
	mtime time.Time
	size  int64
	ino   uint64
	dev   uint64
}

func statFile(path string) (fileStamp, error) {
	fi, err := os.Stat(path) // follows symlinks: certbot's live/ names point into archive/
	if err != nil {
		return fileStamp{}, err
	}
	fs := fileStamp{mtime: fi.ModTime(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		fs.ino, fs.dev = st.Ino, uint64(st.Dev)
	}
	return fs, nil
}

// NewProvider loads the certificate chain and key from files. An error
// names the files.
func NewProvider(certFile, keyFile string, log *slog.Logger) (*Provider, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Provider{certFile: certFile, keyFile: keyFile, log: log}
	if _, err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// Files names the certificate and key files.
func (p *Provider) Files() (certFile, keyFile string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.certFile, p.keyFile
}

// Use switches to another pair of files (the ACME client's, once it has
// written its first certificate) if they load; otherwise the files and the
// certificate in use stay.
func (p *Provider) Use(certFile, keyFile string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if certFile == p.certFile && keyFile == p.keyFile {
		_, err := p.reloadLocked()
		return err
	}
	if _, err := loadPair(certFile, keyFile); err != nil {
		return err
	}
	oldC, oldK := p.certFile, p.keyFile
	p.certFile, p.keyFile = certFile, keyFile
	if _, err := p.reloadLocked(); err != nil {
		p.certFile, p.keyFile = oldC, oldK
		return err
	}
	return nil
}

// loadPair reads a chain and key and checks that they belong together.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: load %s / %s: %w", certFile, keyFile, err)
	}
	if len(cert.Certificate) == 0 {
		return nil, errors.New("certs: no certificate in " + certFile)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certs: %s: %w", certFile, err)
		}
	}
	return &cert, nil
}

// Reload reads the files again and swaps the certificate in when they load.
// It reports whether the certificate in use changed. On error the old
// certificate stays in use.
func (p *Provider) Reload() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reloadLocked()
}

func (p *Provider) reloadLocked() (bool, error) {
	var st stamp
	var err error
	if st.cert, err = statFile(p.certFile); err != nil {
		return false, fmt.Errorf("certs: %w", err)
	}
	if st.key, err = statFile(p.keyFile); err != nil {
		return false, fmt.Errorf("certs: %w", err)
	}
	p.stamp = st
	c, err := loadPair(p.certFile, p.keyFile)
	if err != nil {
		return false, err
	}
	old := p.cur.Swap(c)
	changed := old == nil || !equalChain(old, c)
	if changed && old != nil {
		p.log.Info("certs: certificate replaced", "cert", p.certFile, "subject", c.Leaf.Subject.String(),
			"serial", c.Leaf.SerialNumber.String(), "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return changed, nil
}

func equalChain(a, b *tls.Certificate) bool {
	if len(a.Certificate) != len(b.Certificate) {
		return false
	}
	for i := range a.Certificate {
		if string(a.Certificate[i]) != string(b.Certificate[i]) {
			return false
		}
	}
	return true
}

// changedOnDisk reports whether the files differ from the version last
// loaded or tried.
func (p *Provider) changedOnDisk() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, err1 := statFile(p.certFile)
	k, err2 := statFile(p.keyFile)
	if err1 != nil || err2 != nil {
		return false // a file missing for a moment (a non-atomic copy): wait
	}
	return c != p.stamp.cert || k != p.stamp.key
}

// Watch checks the files every interval until ctx ends and reloads them
// when they changed. A version that does not load is logged once and
// retried when the files change again.
func (p *Provider) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !p.changedOnDisk() {
			continue
		}
		// Give a writer that replaces the two files one after the other a
		// moment to finish, then load what is there.
		time.Sleep(min(interval/2, time.Second))
		if _, err := p.Reload(); err != nil {
			p.log.Error("certs: changed certificate files do not load; keeping the certificate in use", "err", err)
		}
	}
}

// Certificate returns the certificate in use.
func (p *Provider) Certificate() *tls.Certificate { return p.cur.Load() }

// Set puts a certificate in use directly (ACME keeps its own files and
// calls Reload; tests use Set).
func (p *Provider) Set(c *tls.Certificate) { p.cur.Store(c) }

// Config returns a TLS server configuration that always presents the
// certificate in use (TLS 1.2 minimum, RFC 8314 §4.1). Certificates is
// left empty on purpose: crypto/tls skips GetCertificate for clients that
// send no SNI when Certificates is set, and SMTP clients often send none.
func (p *Provider) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return p.cur.Load(), nil
		},
	}
}
