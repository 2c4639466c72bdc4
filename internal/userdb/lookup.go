package userdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/xdg-go/scram"

	"github.com/relayguard/relayguard/internal/address"
	"github.com/relayguard/relayguard/internal/sasl"
)

// recipientQuery is LocalRecipientExists's lookup (prepared in Open).
const recipientQuery = `SELECT
	(SELECT COUNT(*) FROM userdb_accounts WHERE name = ?1 OR name = ?2) +
	(SELECT COUNT(*) FROM userdb_addresses WHERE address = ?2)`

// LocalRecipientExists reports whether localpart@domain (domain already
// known to be local) reaches an account: an account named localpart (a bare
// name takes mail at every local domain) or named localpart@domain, or an
// account owning the address localpart@domain. Suspended accounts still
// receive mail.
//
// Local parts compare case-insensitively for ASCII letters (SQLite NOCASE),
// as most mail systems do although RFC 5321 §2.4 lets the receiver decide.
// A local part containing "@" (from a quoted local part) matches nothing,
// since no account name or address has two "@".
func (d *DB) LocalRecipientExists(ctx context.Context, localpart, domain string) (bool, error) {
	if localpart == "" || strings.Contains(localpart, "@") {
		return false, nil
	}
	dom := canonDomain(domain)
	full := localpart + "@" + dom
	var n int
	err := d.recipient.QueryRowContext(ctx, localpart, full).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("userdb: look up recipient %q: %w", full, err)
	}
	return n > 0, nil
}

// canonDomain puts a domain in the canonical form names are stored in, or
// lower-cases it if it is not a valid host name (it then matches nothing
// that was stored through NormalizeName anyway).
func canonDomain(d string) string {
	if c, err := address.CanonicalDomain(d); err == nil {
		return c
	}
	return strings.ToLower(d)
}

// MayUseSender reports whether the authenticated account user may use addr
// as its envelope sender: addr is the account name (address form), one of
// its addresses, or, for a bare account name, name@<one of localDomains>.
// localDomains are canonical (config.Site.LocalDomains: A-labels, lower
// case, no root dot); addr may be in any form.
// The null reverse-path "" is never an account's address: whether to allow
// it is the caller's decision. An unknown account may use nothing.
func (d *DB) MayUseSender(ctx context.Context, user, addr string, localDomains []string) (bool, error) {
	local, dom, ok := cutLast(addr)
	if !ok || local == "" {
		return false, nil
	}
	dom = canonDomain(dom)
	a := local + "@" + dom
	acct, err := d.Get(ctx, user)
	if errors.Is(err, ErrNoSuchUser) || errors.Is(err, ErrInvalid) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if NameOwns(acct.Name, addr, localDomains) {
		return true, nil
	}
	for _, own := range acct.Addresses {
		if asciiEqualFold(own, a) {
			return true, nil
		}
	}
	return false, nil
}

// NameOwns reports whether the account name itself gives addr: a name in
// address form is that address, a bare name is name@<each of
// localDomains> (canonical, as for MayUseSender; addr in any form).
func NameOwns(name, addr string, localDomains []string) bool {
	local, dom, ok := cutLast(addr)
	if !ok || local == "" {
		return false
	}
	dom = canonDomain(dom)
	if strings.Contains(name, "@") {
		return asciiEqualFold(name, local+"@"+dom)
	}
	return asciiEqualFold(name, local) && slices.Contains(localDomains, dom)
}

func cutLast(addr string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return "", "", false
	}
	return addr[:i], addr[i+1:], true
}

// asciiEqualFold compares like SQLite's NOCASE: ASCII letters fold, nothing
// else does.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// secretRow is what authentication reads for one account.
type secretRow struct {
	name      string
	hash      string
	scram     scram.StoredCredentials
	cram      []byte
	suspended bool
}

// lookupSecrets reads an account's secrets. found is false for an unknown
// or syntactically invalid name; err is a store failure only.
func (d *DB) lookupSecrets(ctx context.Context, user string) (r secretRow, found bool, err error) {
	name, nerr := NormalizeName(user)
	if nerr != nil {
		return r, false, nil
	}
	var salt []byte
	err = d.db.QueryRowContext(ctx, `SELECT name, password_hash, scram_salt, scram_iterations,
		scram_stored_key, scram_server_key, cram_secret, suspended FROM userdb_accounts WHERE name = ?`, name).
		Scan(&r.name, &r.hash, &salt, &r.scram.Iters, &r.scram.StoredKey, &r.scram.ServerKey, &r.cram, &r.suspended)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("userdb: look up %q: %w", name, err)
	}
	r.scram.Salt = string(salt)
	return r, true, nil
}

// foldName is the key decoys are derived from: what lookups treat as the
// same name must give the same decoy.
func foldName(user string) string {
	if n, err := NormalizeName(user); err == nil {
		user = n
	}
	return strings.ToLower(user)
}

// CheckPassword verifies a password (sasl.CheckedCredentials). Unknown,
// invalid and suspended names are verified against a dummy hash of the
// configured scheme, so every failure costs one hash verification.
func (d *DB) CheckPassword(ctx context.Context, user, password string) (string, bool, error) {
	r, found, err := d.lookupSecrets(ctx, user)
	if err != nil {
		return "", false, err
	}
	hash := r.hash
	if !found {
		hash = d.dummyHashValue()
	}
	ok, verr := d.hashes.verify(ctx, hash, preparePassword(password))
	if verr != nil && ctx.Err() != nil {
		return "", false, verr // gave up waiting: a failure of ours, not a wrong password
	}
	if verr != nil && found {
		return "", false, fmt.Errorf("userdb: stored hash of %q: %w", r.name, verr)
	}
	if !found || !ok || r.suspended {
		return "", false, nil
	}
	return r.name, true, nil
}

// LookupSCRAM returns the SCRAM-SHA-256 keys (sasl.CheckedCredentials).
// For an unknown name it returns a decoy with ok false; for a suspended
// account the real keys with ok false, so the exchange looks the same and
// fails at the proof.
func (d *DB) LookupSCRAM(ctx context.Context, user string) (scram.StoredCredentials, string, bool, error) {
	r, found, err := d.lookupSecrets(ctx, user)
	if err != nil {
		return scram.StoredCredentials{}, "", false, err
	}
	if !found {
		return sasl.Decoy(d.opts.Secret, foldName(user), d.opts.SCRAMIterations), "", false, nil
	}
	return r.scram, r.name, !r.suspended, nil
}

// LookupCRAM returns the CRAM-MD5 secret (sasl.CheckedCredentials). ok is
// false for unknown and suspended accounts, for accounts without a secret,
// and whenever CRAM-MD5 is disabled in the options.
func (d *DB) LookupCRAM(ctx context.Context, user string) ([]byte, string, bool, error) {
	r, found, err := d.lookupSecrets(ctx, user)
	if err != nil || !found || !d.opts.CRAMMD5 || len(r.cram) == 0 {
		return nil, "", false, err
	}
	return r.cram, r.name, !r.suspended, nil
}

// VerifyPassword implements sasl.Credentials; store errors are logged and
// count as failure. Prefer CheckPassword.
func (d *DB) VerifyPassword(ctx context.Context, user, password string) (string, bool) {
	id, ok, err := d.CheckPassword(ctx, user, password)
	if err != nil {
		d.log.Error("userdb: password check failed", "user", user, "err", err)
	}
	return id, ok
}

// SCRAMCredentials implements sasl.Credentials.
func (d *DB) SCRAMCredentials(ctx context.Context, user string) (scram.StoredCredentials, bool) {
	sc, _, ok, err := d.LookupSCRAM(ctx, user)
	if err != nil {
		d.log.Error("userdb: SCRAM lookup failed", "user", user, "err", err)
	}
	return sc, ok
}

// CRAMSecret implements sasl.Credentials.
func (d *DB) CRAMSecret(ctx context.Context, user string) ([]byte, bool) {
	s, _, ok, err := d.LookupCRAM(ctx, user)
	if err != nil {
		d.log.Error("userdb: CRAM-MD5 lookup failed", "user", user, "err", err)
	}
	return s, ok
}

var (
	_ sasl.Credentials        = (*DB)(nil)
	_ sasl.CheckedCredentials = (*DB)(nil)
)
