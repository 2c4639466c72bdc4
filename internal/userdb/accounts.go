package userdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/xdg-go/scram"
	"github.com/xdg-go/stringprep"

	"github.com/relayguard/relayguard/internal/sasl"
)

// Account is one account as listed.
type Account struct {
	Name      string    `json:"name"`
	Addresses []string  `json:"addresses"`
	Created   time.Time `json:"created"`
	Suspended bool      `json:"suspended"`
	HasCRAM   bool      `json:"has_cram_md5"`
}

// credentials are the stored forms of one password.
type credentials struct {
	hash  string
	scram scram.StoredCredentials
	cram  []byte // nil unless CRAM-MD5 is enabled
}

// preparePassword applies SASLprep (RFC 4013), which SCRAM clients apply
// before hashing (RFC 5802 §2.2 Normalize) and RFC 4616 §2 asks of PLAIN
// servers. A password SASLprep refuses (e.g. unassigned code points) is used
// as is, so it still works with PLAIN/LOGIN and unprepped SCRAM clients.
func preparePassword(pw string) []byte {
	if p, err := stringprep.SASLprep.Prepare(pw); err == nil && p != "" {
		return []byte(p)
	}
	return []byte(pw)
}

// makeCredentials derives everything stored for a password.
func (d *DB) makeCredentials(password string) (credentials, error) {
	if err := checkPassword(password); err != nil {
		return credentials{}, err
	}
	prepped := preparePassword(password)
	h, err := hashPassword(d.opts.PasswordHash, prepped)
	if err != nil {
		return credentials{}, fmt.Errorf("userdb: hash password: %w", err)
	}
	salt := make([]byte, sasl.SCRAMSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return credentials{}, err
	}
	// RFC 5802 §3: SaltedPassword = Hi(Normalize(password), salt, i),
	// StoredKey = H(HMAC(SaltedPassword, "Client Key")), ServerKey =
	// HMAC(SaltedPassword, "Server Key"); the scram library computes them.
	cl, err := scram.SHA256.NewClientUnprepped("", string(prepped), "")
	if err != nil {
		return credentials{}, err
	}
	sc, err := cl.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: d.opts.SCRAMIterations})
	if err != nil {
		return credentials{}, fmt.Errorf("userdb: derive SCRAM keys: %w", err)
	}
	c := credentials{hash: h, scram: sc}
	if d.opts.CRAMMD5 {
		// RFC 2195 keys HMAC-MD5 with the password as typed.
		c.cram = sasl.CRAMMD5Secret([]byte(password))
	}
	return c, nil
}

// Add creates an account.
func (d *DB) Add(ctx context.Context, user, password string) error {
	name, err := NormalizeName(user)
	if err != nil {
		return err
	}
	c, err := d.makeCredentials(password)
	if err != nil {
		return err
	}
	_, err = d.db.ExecContext(ctx, `INSERT INTO userdb_accounts
		(name, password_hash, scram_salt, scram_iterations, scram_stored_key, scram_server_key, cram_secret, created)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		name, c.hash, []byte(c.scram.Salt), c.scram.Iters, c.scram.StoredKey, c.scram.ServerKey, c.cram, time.Now().Unix())
	if err != nil {
		if exists, qerr := d.exists(ctx, name); qerr == nil && exists {
			return fmt.Errorf("userdb: account %q: %w", name, ErrExists)
		}
		return fmt.Errorf("userdb: add %q: %w", name, err)
	}
	return nil
}

func (d *DB) exists(ctx context.Context, name string) (bool, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM userdb_accounts WHERE name = ?`, name).Scan(&n)
	return n > 0, err
}

// SetPassword replaces an account's password and all derived secrets. With
// CRAM-MD5 disabled, any stored CRAM-MD5 secret is removed.
func (d *DB) SetPassword(ctx context.Context, user, password string) error {
	name, err := NormalizeName(user)
	if err != nil {
		return err
	}
	c, err := d.makeCredentials(password)
	if err != nil {
		return err
	}
	res, err := d.db.ExecContext(ctx, `UPDATE userdb_accounts SET password_hash = ?, scram_salt = ?,
		scram_iterations = ?, scram_stored_key = ?, scram_server_key = ?, cram_secret = ? WHERE name = ?`,
		c.hash, []byte(c.scram.Salt), c.scram.Iters, c.scram.StoredKey, c.scram.ServerKey, c.cram, name)
	return d.oneRow(res, err, "set password of", name)
}

// oneRow turns an UPDATE/DELETE of one account into ErrNoSuchUser when it
// matched nothing.
func (d *DB) oneRow(res sql.Result, err error, what, name string) error {
	if err != nil {
		return fmt.Errorf("userdb: %s %q: %w", what, name, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("userdb: %s %q: %w", what, name, err)
	} else if n == 0 {
		return fmt.Errorf("userdb: account %q: %w", name, ErrNoSuchUser)
	}
	return nil
}

// Delete removes an account and its addresses.
func (d *DB) Delete(ctx context.Context, user string) error {
	name, err := NormalizeName(user)
	if err != nil {
		return err
	}
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("userdb: delete %q: %w", name, err)
	}
	defer tx.Rollback()
	// Explicit, so it holds even without PRAGMA foreign_keys.
	if _, err := tx.ExecContext(ctx, `DELETE FROM userdb_addresses WHERE account = ?`, name); err != nil {
		return fmt.Errorf("userdb: delete %q: %w", name, err)
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM userdb_accounts WHERE name = ?`, name)
	if err := d.oneRow(res, err, "delete", name); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("userdb: delete %q: %w", name, err)
	}
	return nil
}

// Suspend marks an account suspended: it can no longer authenticate (every
// mechanism fails as for a wrong password) but still receives mail.
func (d *DB) Suspend(ctx context.Context, user string) error { return d.setSuspended(ctx, user, true) }

// Unsuspend lifts a suspension.
func (d *DB) Unsuspend(ctx context.Context, user string) error {
	return d.setSuspended(ctx, user, false)
}

func (d *DB) setSuspended(ctx context.Context, user string, on bool) error {
	name, err := NormalizeName(user)
	if err != nil {
		return err
	}
	res, err := d.db.ExecContext(ctx, `UPDATE userdb_accounts SET suspended = ? WHERE name = ?`, on, name)
	return d.oneRow(res, err, "suspend", name)
}

// Get returns one account.
func (d *DB) Get(ctx context.Context, user string) (Account, error) {
	name, err := NormalizeName(user)
	if err != nil {
		return Account{}, err
	}
	accts, err := d.list(ctx, name)
	if err != nil {
		return Account{}, err
	}
	if len(accts) == 0 {
		return Account{}, fmt.Errorf("userdb: account %q: %w", name, ErrNoSuchUser)
	}
	return accts[0], nil
}

// List returns all accounts sorted by name, with their addresses.
func (d *DB) List(ctx context.Context) ([]Account, error) { return d.list(ctx, "") }

func (d *DB) list(ctx context.Context, only string) ([]Account, error) {
	q := `SELECT name, created, suspended, cram_secret IS NOT NULL FROM userdb_accounts`
	var args []any
	if only != "" {
		q += ` WHERE name = ?`
		args = append(args, only)
	}
	rows, err := d.db.QueryContext(ctx, q+` ORDER BY name`, args...)
	if err != nil {
		return nil, fmt.Errorf("userdb: list accounts: %w", err)
	}
	defer rows.Close()
	var out []Account
	idx := map[string]int{}
	for rows.Next() {
		var a Account
		var created int64
		if err := rows.Scan(&a.Name, &created, &a.Suspended, &a.HasCRAM); err != nil {
			return nil, fmt.Errorf("userdb: list accounts: %w", err)
		}
		a.Created = time.Unix(created, 0).UTC()
		a.Addresses = []string{}
		idx[strings.ToLower(a.Name)] = len(out)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("userdb: list accounts: %w", err)
	}
	q = `SELECT account, address FROM userdb_addresses`
	if only != "" {
		q += ` WHERE account = ?`
	}
	arows, err := d.db.QueryContext(ctx, q+` ORDER BY address`, args...)
	if err != nil {
		return nil, fmt.Errorf("userdb: list addresses: %w", err)
	}
	defer arows.Close()
	for arows.Next() {
		var acct, addr string
		if err := arows.Scan(&acct, &addr); err != nil {
			return nil, fmt.Errorf("userdb: list addresses: %w", err)
		}
		if i, ok := idx[strings.ToLower(acct)]; ok {
			out[i].Addresses = append(out[i].Addresses, addr)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, arows.Err()
}

// AddAddress lets an account send as addr (sender binding).
func (d *DB) AddAddress(ctx context.Context, user, addr string) error {
	name, err := NormalizeName(user)
	if err != nil {
		return err
	}
	a, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("userdb: add address %q to %q: %w", a, name, err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM userdb_accounts WHERE name = ?`, name).Scan(&n); err != nil {
		return fmt.Errorf("userdb: add address %q to %q: %w", a, name, err)
	}
	if n == 0 {
		return fmt.Errorf("userdb: account %q: %w", name, ErrNoSuchUser)
	}
	res, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO userdb_addresses(account, address) VALUES (?, ?)`, name, a)
	if err != nil {
		return fmt.Errorf("userdb: add address %q to %q: %w", a, name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("userdb: address %q of %q: %w", a, name, ErrExists)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("userdb: add address %q to %q: %w", a, name, err)
	}
	return nil
}

// DelAddress withdraws an address from an account.
func (d *DB) DelAddress(ctx context.Context, user, addr string) error {
	name, err := NormalizeName(user)
	if err != nil {
		return err
	}
	a, err := NormalizeAddress(addr)
	if err != nil {
		return err
	}
	res, err := d.db.ExecContext(ctx, `DELETE FROM userdb_addresses WHERE account = ? AND address = ?`, name, a)
	if err != nil {
		return fmt.Errorf("userdb: delete address %q of %q: %w", a, name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if ok, qerr := d.exists(ctx, name); qerr == nil && !ok {
			return fmt.Errorf("userdb: account %q: %w", name, ErrNoSuchUser)
		}
		return fmt.Errorf("userdb: address %q of %q: %w", a, name, ErrNoSuchAddress)
	}
	return nil
}

// Addresses returns the addresses an account owns, sorted.
func (d *DB) Addresses(ctx context.Context, user string) ([]string, error) {
	a, err := d.Get(ctx, user)
	if err != nil {
		return nil, err
	}
	return a.Addresses, nil
}
