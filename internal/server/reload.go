package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/relayguard/relayguard/internal/config"
)

// restartKeys are the configuration keys a reload cannot apply to a
// running server: the state it has open, the admin listener, the log
// format, the guard (whose counters and limits are built at start) and the
// ACME client and certificate watcher (started once).
// A change to them is logged and waits for the next start.
var restartKeys = []string{"store.", "spool.", "admin.", "log.format", "guard.", "tls.acme", "tls.reload_interval"}

func needsRestart(key string) bool {
	for _, p := range restartKeys {
		if key == strings.TrimSuffix(p, ".") || strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// reload reads the configuration again and puts it in force for what
// starts from now on: new SMTP sessions (hostname, domains, networks,
// limits, AUTH, listeners, certificate), policy checks, deliveries and
// send limits. Sessions in progress are not dropped; they finish on the
// settings they started with. A configuration that does not load or does
// not pass the checks serve makes at start is refused with a log line
// saying why, and the one in force stays.
func (s *server) reload(ctx context.Context) {
	log := s.log
	refuse := func(err error) {
		log.Error("reload refused; the running configuration stays", "err", err)
	}
	next, err := s.opt.Load()
	if err != nil {
		refuse(err)
		return
	}
	if next.DataDir != s.cfg.DataDir {
		refuse(fmt.Errorf("data_dir %s differs from the running %s: moving the state needs a restart", next.DataDir, s.cfg.DataDir))
		return
	}
	if err := Check(next); err != nil {
		refuse(err)
		return
	}
	changed, err := config.Changed(s.cfg, next)
	if err != nil {
		refuse(err)
		return
	}

	// Everything that can fail is made before anything is swapped: the
	// policy engine, the sockets of new or moved listeners, delivery.
	eng, err := s.ext.newEngine(next)
	if err != nil {
		refuse(err)
		return
	}
	var fresh []config.ListenerConfig
	var freshLns []net.Listener
	for _, lc := range next.Listeners {
		if b := s.bound[lc.Name]; b != nil && b.address == lc.Address {
			continue
		}
		ln, err := s.rebind(lc)
		if err != nil {
			closeFresh(fresh, freshLns)
			refuse(err)
			return
		}
		fresh, freshLns = append(fresh, lc), append(freshLns, ln)
	}
	if err := s.ext.delivery.Reload(next); err != nil {
		closeFresh(fresh, freshLns)
		refuse(err)
		return
	}
	if err := s.srv.Reload(next.SMTP(), next.Listeners); err != nil {
		closeFresh(fresh, freshLns)
		refuse(err)
		return
	}
	s.ext.policy.use(eng)
	s.reloadCertificate(next)

	// Listeners: stop those removed or moved, serve the new ones.
	keep := map[string]bool{}
	for _, lc := range next.Listeners {
		keep[lc.Name+"\x00"+lc.Address] = true
	}
	for name, b := range s.bound {
		if !keep[name+"\x00"+b.address] {
			b.ln.Close() // its sessions go on; Serve returns
			delete(s.bound, name)
			if sd, ok := strings.CutPrefix(b.address, "systemd:"); ok {
				delete(s.activated, sd)
			}
			log.Info("listener closed", "listener", name, "address", b.address)
		}
	}
	for i, lc := range fresh {
		s.serve(ctx, lc, freshLns[i])
	}
	if s.opt.Level != nil {
		var lvl slog.Level
		if lvl.UnmarshalText([]byte(next.Log.Level)) == nil {
			s.opt.Level.Set(lvl)
		}
	}

	var applied, later []string
	for _, k := range changed {
		if needsRestart(k) {
			later = append(later, k)
		} else {
			applied = append(applied, k)
		}
	}
	s.cfg = next
	file := next.Path()
	if file == "" {
		file = "(embedded)"
	}
	if len(applied) == 0 && len(later) == 0 {
		log.Info("configuration reloaded: unchanged; certificate reread", "config", file)
	} else {
		log.Info("configuration reloaded", "config", file, "changed", strings.Join(applied, " "))
	}
	if len(later) > 0 {
		log.Warn("configuration changes that apply at the next restart", "keys", strings.Join(later, " "))
	}
}

// rebind binds a listener that is new or has moved, on a reload. A socket
// passed by systemd is only available if it was passed at start and no
// other listener serves it.
func (s *server) rebind(lc config.ListenerConfig) (net.Listener, error) {
	ln, err := openListener(lc, s.activated)
	if err != nil {
		return nil, err
	}
	for name, b := range s.bound {
		if b.ln == ln && name != lc.Name {
			return nil, fmt.Errorf("listener %s: %s is served by listener %s", lc.Name, lc.Address, name)
		}
	}
	return ln, nil
}

// closeFresh closes the sockets a refused reload bound, except those
// systemd passed (they stay available for the next reload).
func closeFresh(lcs []config.ListenerConfig, lns []net.Listener) {
	for i, ln := range lns {
		if !strings.HasPrefix(lcs[i].Address, "systemd:") {
			ln.Close()
		}
	}
}

// reloadCertificate rereads the certificate files (a renewal needs only a
// reload), or switches to the files the new configuration names. Check
// loaded them already; should they fail now, the certificate in use stays.
func (s *server) reloadCertificate(next *config.Config) {
	certFile, keyFile := s.certp.Files()
	var changed bool
	var err error
	if !next.TLS.ACME && (next.TLS.CertFile != certFile || next.TLS.KeyFile != keyFile) {
		certFile, keyFile = next.TLS.CertFile, next.TLS.KeyFile
		changed, err = true, s.certp.Use(certFile, keyFile)
	} else {
		changed, err = s.certp.Reload()
	}
	if err != nil {
		s.log.Error("certificate files do not load; keeping the certificate in use", "cert", certFile, "key", keyFile, "err", err)
		return
	}
	s.log.Info("certificate reread", "cert", certFile, "changed", changed)
}
