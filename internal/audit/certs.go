package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/msgauth"
)

// checkDKIM verifies each configured DKIM key of a domain against DNS
// with msgauth.CheckKey (the check of `relayguard dkim check`).
func (r *run) checkDKIM(ctx context.Context, domain string) {
	var keys []config.DKIMKey
	for _, k := range r.cfg.DKIM.Keys {
		if strings.EqualFold(strings.TrimSuffix(k.Domain, "."), domain) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		if r.relayguardInUse() && slices.Contains(r.cfg.Site.LocalDomains, domain) {
			r.add(Finding{Check: "identity.no-dkim", Area: AreaIdentity, Severity: Low, Subject: domain,
				Title: "relayguard signs no mail of this domain with DKIM: receivers cannot tell it from forgeries",
				Fix:   fmt.Sprintf("relayguard dkim keygen %s, add the [[dkim.key]] it prints and publish its record", domain)})
		}
		return
	}
	for _, k := range keys {
		st := msgauth.CheckKey(ctx, r.res.LookupTXT, k)
		if st.OK {
			continue
		}
		r.add(Finding{Check: "identity.dkim", Area: AreaIdentity, Severity: High, Subject: domain,
			Title:    fmt.Sprintf("the DKIM key %s._domainkey.%s does not verify: signed mail fails DKIM", k.Selector, domain),
			Evidence: []string{st.Text},
			Fix:      fmt.Sprintf("publish the record of %s (relayguard dkim check %s shows it)", k.KeyFile, domain)})
	}
}

// certUse is one certificate and where it is used.
type certUse struct {
	leaf  *x509.Certificate
	where []string
	names []string // names it should cover
}

// certFiles lists relayguard's and every Postfix instance's certificate
// files.
func (r *run) certFiles() map[string]string {
	out := map[string]string{}
	if r.relayguardInUse() && r.cfg.TLS.CertFile != "" {
		out[r.cfg.TLS.CertFile] = "relayguard [tls] cert_file"
	}
	for _, p := range r.postfix {
		for _, k := range []string{"smtpd_tls_cert_file", "smtpd_tls_chain_files", "smtpd_tls_eccert_file"} {
			for _, f := range strings.FieldsFunc(p.Main[k], func(r rune) bool { return r == ',' || r == ' ' }) {
				f = strings.ReplaceAll(f, "$config_directory", p.Dir)
				if filepath.IsAbs(f) {
					out[f] = "Postfix " + p.Dir + " " + k
				}
			}
		}
	}
	return out
}

func readLeaf(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: no certificate in it", path)
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// auditCerts checks every certificate the listeners present and the
// configured files hold: validity and days to expiry, names, issuer.
func (r *run) auditCerts() {
	byFP := map[[32]byte]*certUse{}
	var order [][32]byte
	add := func(leaf *x509.Certificate, where string, names []string) {
		fp := sha256.Sum256(leaf.Raw)
		u := byFP[fp]
		if u == nil {
			u = &certUse{leaf: leaf}
			byFP[fp] = u
			order = append(order, fp)
		}
		u.where = append(u.where, where)
		u.names = uniq(append(u.names, names...))
	}
	helos := r.heloNames()
	for _, l := range r.listeners {
		if l.Probe != nil && l.Probe.TLS != nil && len(l.Probe.TLS.Chain) > 0 {
			names := helos
			if l.PostfixConfig != "" {
				for _, p := range r.postfix {
					if p.Dir == l.PostfixConfig {
						names = []string{p.Main["myhostname"]}
					}
				}
			} else if l.Relayguard {
				names = []string{r.cfg.Site.Hostname}
			}
			add(l.Probe.TLS.Chain[0], "listener "+l.Describe(), names)
		}
	}
	files := r.certFiles()
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		leaf, err := readLeaf(p)
		if err != nil {
			if os.IsNotExist(err) && strings.HasPrefix(files[p], "relayguard") {
				continue // created on serve's first start
			}
			r.problem(AreaIdentity, "certificate", fmt.Errorf("%s (%s): %w", p, files[p], err))
			continue
		}
		add(leaf, files[p]+" "+p, helos)
	}
	for _, fp := range order {
		r.certFindings(byFP[fp])
	}
}

func (r *run) certFindings(u *certUse) {
	leaf := u.leaf
	subj := fmt.Sprintf("certificate %s (serial %x)", leaf.Subject.CommonName, leaf.SerialNumber)
	ev := []string{"used by: " + strings.Join(u.where, "; "),
		fmt.Sprintf("valid %s to %s, issuer %s, names %s", leaf.NotBefore.Format("2006-01-02"), leaf.NotAfter.Format("2006-01-02 15:04"), leaf.Issuer, strings.Join(leaf.DNSNames, " "))}
	fix := "renew it (relayguard: [tls] acme = true, or new cert_file/key_file, reloaded on SIGHUP; Postfix: replace the files and postfix reload; certbot renew)"
	left := leaf.NotAfter.Sub(r.now)
	days := int(left.Hours() / 24)
	switch {
	case left <= 0:
		r.add(Finding{Check: "identity.cert-expired", Area: AreaIdentity, Severity: Critical, Subject: subj,
			Title: fmt.Sprintf("the TLS certificate expired %d days ago: senders with MTA-STS or DANE and every mail client refuse it", -days), Evidence: ev, Fix: fix})
	case leaf.NotBefore.After(r.now):
		r.add(Finding{Check: "identity.cert-not-yet-valid", Area: AreaIdentity, Severity: High, Subject: subj,
			Title: "the TLS certificate is not valid yet (clock or certificate wrong)", Evidence: ev, Fix: fix})
	case left < 7*24*time.Hour:
		r.add(Finding{Check: "identity.cert-expiring", Area: AreaIdentity, Severity: High, Subject: subj,
			Title: fmt.Sprintf("the TLS certificate expires in %d days", days), Evidence: ev, Fix: fix})
	case left < 21*24*time.Hour:
		r.add(Finding{Check: "identity.cert-expiring", Area: AreaIdentity, Severity: Medium, Subject: subj,
			Title: fmt.Sprintf("the TLS certificate expires in %d days", days), Evidence: ev, Fix: fix})
	}
	var covered bool
	for _, n := range u.names {
		if n != "" && leaf.VerifyHostname(n) == nil {
			covered = true
		}
	}
	if !covered && len(u.names) > 0 {
		r.add(Finding{Check: "identity.cert-name", Area: AreaIdentity, Severity: Low, Subject: subj,
			Title:    "the certificate does not name the host: senders that verify (MTA-STS, DANE-TA) and mail clients refuse it",
			Evidence: append(ev, "host names: "+strings.Join(u.names, " ")),
			Fix:      "get a certificate for " + strings.Join(u.names, ", ")})
	}
	// Signed by its own key: CheckSignatureFrom would also demand that the
	// "issuer" be a CA, which a self-signed server certificate often is not.
	if bytes.Equal(leaf.RawIssuer, leaf.RawSubject) && leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil {
		r.add(Finding{Check: "identity.cert-self-signed", Area: AreaIdentity, Severity: Low, Subject: subj,
			Title:    "self-signed certificate: fine for opportunistic TLS between MTAs, refused by mail clients and MTA-STS senders",
			Evidence: ev, Fix: "use a certificate from a public CA ([tls] acme = true in relayguard; certbot for Postfix)"})
	}
}
