// Package userdb keeps relayguard's accounts in the embedded SQLite
// database: names, password hashes (argon2id or bcrypt), SCRAM-SHA-256 keys
// (RFC 5802 §3, RFC 7677), optional CRAM-MD5 secrets, and the addresses an
// account may send as. It is the Cyrus sasldb equivalent and implements
// sasl.Credentials for the SMTP server.
package userdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/relayguard/relayguard/internal/address"
	"github.com/relayguard/relayguard/internal/sasl"
)

// Errors for the caller to test with errors.Is. Returned errors wrap them
// with the input that failed.
var (
	ErrNoSuchUser    = errors.New("no such account")
	ErrExists        = errors.New("already exists")
	ErrNoSuchAddress = errors.New("address not owned by the account")
	ErrInvalid       = errors.New("invalid")
)

// MaxNameLen is the longest account name or address, in octets.
const MaxNameLen = 255

// MaxPasswordLen is the longest password accepted, in octets.
const MaxPasswordLen = 1024

// Options configure the database.
type Options struct {
	// PasswordHash is the scheme for new passwords: "argon2id" (default)
	// or "bcrypt". Existing hashes of either scheme always verify.
	PasswordHash string
	// SCRAMIterations is the PBKDF2 iteration count for new SCRAM keys,
	// at least 4096 (RFC 7677 §4). 0 means 4096.
	SCRAMIterations int
	// CRAMMD5 stores a CRAM-MD5 secret with each new password. The
	// secret is password-equivalent.
	CRAMMD5 bool
	// Secret keys the decoy SCRAM salts of unknown users. Empty: a
	// random secret is created once and kept in the database, so that
	// decoys stay the same across restarts, like real salts.
	Secret []byte
	// HashMemory is the memory, in bytes, that concurrent password
	// verifications may hold together; a login beyond it waits for its
	// turn. 0: automatic (see hashBudgetKiB).
	HashMemory int64
	// Logger receives store errors met by the sasl.Credentials methods,
	// which cannot return them. nil: slog.Default().
	Logger *slog.Logger
}

// DB is the account database. It is safe for concurrent use.
type DB struct {
	db   *sql.DB
	opts Options
	log  *slog.Logger

	dummyOnce sync.Once
	dummyHash string
	hashes    *hashLimiter

	// recipient is LocalRecipientExists's query, prepared once: it runs
	// at every RCPT of the MX listener, and parsing it again each time
	// was half its cost (perf, bench/serve).
	recipient *sql.Stmt
}

const schema = `
CREATE TABLE IF NOT EXISTS userdb_accounts (
	name             TEXT PRIMARY KEY COLLATE NOCASE,
	password_hash    TEXT NOT NULL,
	scram_salt       BLOB NOT NULL,
	scram_iterations INTEGER NOT NULL,
	scram_stored_key BLOB NOT NULL,
	scram_server_key BLOB NOT NULL,
	cram_secret      BLOB,
	created          INTEGER NOT NULL,
	suspended        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS userdb_addresses (
	account TEXT NOT NULL COLLATE NOCASE REFERENCES userdb_accounts(name) ON DELETE CASCADE,
	address TEXT NOT NULL COLLATE NOCASE,
	PRIMARY KEY (account, address)
);
CREATE INDEX IF NOT EXISTS userdb_addresses_address ON userdb_addresses(address);
CREATE TABLE IF NOT EXISTS userdb_meta (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
);`

// Open creates the tables if needed and returns the account database.
func Open(ctx context.Context, db *sql.DB, opts Options) (*DB, error) {
	if opts.PasswordHash == "" {
		opts.PasswordHash = Argon2id
	}
	if opts.PasswordHash != Argon2id && opts.PasswordHash != Bcrypt {
		return nil, fmt.Errorf("userdb: password_hash %q: want %q or %q", opts.PasswordHash, Argon2id, Bcrypt)
	}
	if opts.SCRAMIterations == 0 {
		opts.SCRAMIterations = sasl.MinSCRAMIterations
	}
	if opts.SCRAMIterations < sasl.MinSCRAMIterations || opts.SCRAMIterations > 10_000_000 {
		return nil, fmt.Errorf("userdb: scram_iterations %d: want between %d and 10000000", opts.SCRAMIterations, sasl.MinSCRAMIterations)
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return nil, fmt.Errorf("userdb: create tables: %w", err)
	}
	if len(opts.Secret) == 0 {
		s, err := loadSecret(ctx, db)
		if err != nil {
			return nil, err
		}
		opts.Secret = s
	}
	recipient, err := db.PrepareContext(ctx, recipientQuery)
	if err != nil {
		return nil, fmt.Errorf("userdb: prepare recipient lookup: %w", err)
	}
	d := &DB{db: db, opts: opts, log: opts.Logger, hashes: newHashLimiter(opts.HashMemory), recipient: recipient}
	if d.log == nil {
		d.log = slog.Default()
	}
	return d, nil
}

// Prepare makes the decoy hash that an unknown user's password is checked
// against, so that the first such login does not pay for making it (and
// stand out by its time). serve calls it before its listeners accept; a
// command that checks no password (`relayguard user list`) does not. Open
// starts nothing: it once made the hash in a goroutine nobody waited for.
func (d *DB) Prepare() { d.dummyHashValue() }

// loadSecret returns the persisted decoy secret, creating it on first use.
func loadSecret(ctx context.Context, db *sql.DB) ([]byte, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO userdb_meta(key, value) VALUES ('decoy_secret', ?)`, fresh); err != nil {
		return nil, fmt.Errorf("userdb: store decoy secret: %w", err)
	}
	var s []byte
	if err := db.QueryRowContext(ctx, `SELECT value FROM userdb_meta WHERE key = 'decoy_secret'`).Scan(&s); err != nil {
		return nil, fmt.Errorf("userdb: load decoy secret: %w", err)
	}
	return s, nil
}

// dummyHashValue is a hash of a random password in the configured scheme,
// verified for unknown users so that they cost what a wrong password does.
func (d *DB) dummyHashValue() string {
	d.dummyOnce.Do(func() {
		pw := make([]byte, 24)
		rand.Read(pw)
		h, err := hashPassword(d.opts.PasswordHash, []byte(b64.EncodeToString(pw)))
		if err != nil {
			panic("userdb: hashing a dummy password: " + err.Error()) // only fails on an unknown scheme, excluded by Open
		}
		d.dummyHash = h
	})
	return d.dummyHash
}

// NormalizeName checks and normalises an account name: a bare name
// ("alice") or an address ("alice@example.com"). Surrounding space is
// trimmed and the domain is put in canonical form (lower case, IDNA
// A-labels, no trailing dot), the same form the relay decision compares.
// Names are matched case-insensitively (ASCII) everywhere.
func NormalizeName(in string) (string, error) {
	s := strings.TrimSpace(in)
	if err := checkText(s, in, "account name"); err != nil {
		return "", err
	}
	if !strings.Contains(s, "@") {
		return s, nil
	}
	return normalizeAddr(s, in, "account name")
}

// NormalizeAddress checks and normalises an address an account may use:
// local@domain with the domain in canonical form.
func NormalizeAddress(in string) (string, error) {
	s := strings.TrimSpace(in)
	if err := checkText(s, in, "address"); err != nil {
		return "", err
	}
	return normalizeAddr(s, in, "address")
}

func checkText(s, in, what string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w %s %q: empty", ErrInvalid, what, in)
	case len(s) > MaxNameLen:
		return fmt.Errorf("%w %s %.40q...: longer than %d octets", ErrInvalid, what, in, MaxNameLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w %s %q: not UTF-8", ErrInvalid, what, in)
	}
	for _, r := range s {
		switch {
		case unicode.IsSpace(r):
			return fmt.Errorf("%w %s %q: contains white space", ErrInvalid, what, in)
		case unicode.IsControl(r):
			return fmt.Errorf("%w %s %q: contains a control character", ErrInvalid, what, in)
		}
	}
	return nil
}

func normalizeAddr(s, in, what string) (string, error) {
	local, domain, ok := strings.Cut(s, "@")
	switch {
	case !ok:
		return "", fmt.Errorf("%w %s %q: want local@domain", ErrInvalid, what, in)
	case local == "":
		return "", fmt.Errorf("%w %s %q: empty local part", ErrInvalid, what, in)
	case strings.Contains(domain, "@"):
		return "", fmt.Errorf("%w %s %q: more than one @", ErrInvalid, what, in)
	case len(local) > address.MaxLocalPart:
		return "", fmt.Errorf("%w %s %q: local part longer than %d octets", ErrInvalid, what, in, address.MaxLocalPart)
	}
	canon, err := address.CanonicalDomain(domain)
	if err != nil {
		return "", fmt.Errorf("%w %s %q: domain: %v", ErrInvalid, what, in, err)
	}
	return local + "@" + canon, nil
}

// checkPassword rejects passwords that could not be used over SMTP AUTH.
func checkPassword(pw string) error {
	switch {
	case pw == "":
		return fmt.Errorf("%w password: empty", ErrInvalid)
	case len(pw) > MaxPasswordLen:
		return fmt.Errorf("%w password: longer than %d octets", ErrInvalid, MaxPasswordLen)
	case !utf8.ValidString(pw):
		return fmt.Errorf("%w password: not UTF-8", ErrInvalid)
	case strings.ContainsRune(pw, 0):
		return fmt.Errorf("%w password: contains NUL, which SASL PLAIN cannot carry", ErrInvalid)
	}
	return nil
}
