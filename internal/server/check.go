package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/relayguard/relayguard/internal/certs"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/msgauth"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/store"
)

// Check makes every check serve makes of a finished configuration before
// it starts, without binding a port or writing anything: the TLS
// certificate and key load, the policy engine compiles (access table files
// are read), delivery builds (the smarthost password file is read), the
// DKIM keys load and the [store] url parses as the Redis client reads it.
// `relayguard config check` runs it; so do serve at start and a reload
// before it applies a new configuration, so that the three agree.
func Check(cfg *config.Config) error {
	// The directories serve creates at start: one that cannot be created
	// (a file in the way, a read-only file system, no permission) is a
	// configuration error here, not a failure after the listeners are up.
	for _, d := range []struct{ key, path string }{{"data_dir", cfg.DataDir}, {"spool.dir", cfg.Spool.Dir}} {
		if err := creatableDir(d.path); err != nil {
			return fmt.Errorf("%s %s: cannot be created or written: %w", d.key, d.path, err)
		}
	}
	if _, err := loadTLS(cfg, nil); err != nil {
		return err
	}
	if _, err := policy.New(cfg.Site, cfg.Policy, cfg.DNSBL, policy.Deps{}); err != nil {
		return err
	}
	d, err := deliver.New(cfg.Delivery, cfg.Hostname, nil, deliver.Options{LocalDomains: cfg.Site.LocalDomains})
	if err != nil {
		return err
	}
	d.Close()
	if _, err := msgauth.LoadSigner(cfg.DKIM); err != nil {
		return err
	}
	if cfg.Store.URL != "" {
		if _, err := store.ParseURL(cfg.Store.URL); err != nil {
			return err
		}
	}
	// One log named twice through a link: config refuses the same path
	// twice, but only watch looked at the files themselves.
	return distinctFiles(cfg.Guard.Files)
}

// defaultCert reports whether the configuration uses the self-signed pair
// under the data directory that serve creates when it is missing.
func defaultCert(cfg *config.Config) bool {
	return cfg.TLS.CertFile == filepath.Join(cfg.DataDir, "tls", "cert.pem") && cfg.TLS.KeyFile == filepath.Join(cfg.DataDir, "tls", "key.pem")
}

// loadTLS loads the certificate and key into the process's one
// certificate provider. With a logger (serve), a missing default pair is
// made (self-signed) and the creation logged; without (config check), a
// missing default pair is no error (serve will make it) and nil is
// returned. With tls.acme, the certificate the ACME client obtained
// earlier is used when it loads; until there is one, cert_file/key_file.
//
// A self-signed certificate is made only at the default location: a
// configured path that does not exist is an operator's typo, not a place
// to write a key.
func loadTLS(cfg *config.Config, log *slog.Logger) (*certs.Provider, error) {
	if cfg.TLS.ACME {
		if p, err := certs.NewProvider(cfg.TLS.ACMECertFile(cfg.DataDir), cfg.TLS.ACMEKeyFile(cfg.DataDir), log); err == nil {
			return p, nil
		}
	}
	if defaultCert(cfg) {
		if _, err := os.Stat(cfg.TLS.CertFile); os.IsNotExist(err) && log == nil {
			return nil, nil
		}
		if log != nil {
			created, err := certs.EnsureSelfSigned(cfg.TLS.CertFile, cfg.TLS.KeyFile, []string{cfg.Hostname, "localhost", "127.0.0.1", "::1"})
			if err != nil {
				return nil, err
			}
			if created && !cfg.TLS.ACME {
				log.Info("created a self-signed certificate; replace it with a real one for production", "cert", cfg.TLS.CertFile, "key", cfg.TLS.KeyFile)
			}
		}
	}
	p, err := certs.NewProvider(cfg.TLS.CertFile, cfg.TLS.KeyFile, log)
	if err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner // certs names the files too
		}
		return nil, fmt.Errorf("tls.cert_file %q / tls.key_file %q do not load: want a PEM certificate chain and its key: %w", cfg.TLS.CertFile, cfg.TLS.KeyFile, err)
	}
	return p, nil
}

// creatableDir reports why dir could not be created (os.MkdirAll) and
// written by this process, without creating anything: its nearest existing
// ancestor (or dir itself) must be a directory this process may write in
// (access(2): permissions, read-only file systems).
func creatableDir(dir string) error {
	for p := dir; ; {
		fi, err := os.Stat(p)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("%s is not a directory", p)
		case err == nil:
			if err := unix.Access(p, unix.W_OK|unix.X_OK); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			return nil
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return err
		}
		p = parent
	}
}
