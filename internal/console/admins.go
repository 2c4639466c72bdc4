package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/relayguard/relayguard/internal/userdb"
)

// Roles of an admin account.
const (
	RoleAdmin    = "admin"    // sees everything and acts
	RoleReadOnly = "readonly" // sees everything, acts on nothing
)

// Errors of the admin store, wrapped with the name that failed.
var (
	ErrNoSuchAdmin = errors.New("no such admin account")
	ErrAdminExists = errors.New("admin account already exists")
)

// Admin is an account of the console: separate from the mail accounts
// (a mail password never opens the console).
type Admin struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
}

// Token is an API token of an admin account, for scripts (curl with
// "Authorization: Bearer ..."). Only its SHA-256 is stored: the token is
// shown once, when it is made.
type Token struct {
	ID       int64     `json:"id"`
	Admin    string    `json:"admin"`
	Label    string    `json:"label"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires,omitzero"`
	LastUsed time.Time `json:"last_used,omitzero"`
}

// tokenPrefix starts every token, so that one pasted in the wrong place
// (a log, a chat) is recognisable and can be revoked.
const tokenPrefix = "rgc_"

// Admins is the store of admin accounts and API tokens in the SQLite
// database (tables console_admins, console_tokens), shared by a running
// server and `relayguard admin`.
type Admins struct {
	db     *sql.DB
	hasher *userdb.Hasher
	now    func() time.Time

	mu   sync.Mutex
	used map[int64]time.Time // when a token's last_used was last written
}

// OpenAdmins creates the console's tables in db if needed. hashMemory
// bounds concurrent password verifications ([auth] hash_memory; 0:
// automatic).
func OpenAdmins(ctx context.Context, db *sql.DB, hashMemory int64) (*Admins, error) {
	_, err := db.ExecContext(ctx, `
CREATE TABLE IF NOT EXISTS console_admins (
	name          TEXT PRIMARY KEY COLLATE NOCASE,
	password_hash TEXT NOT NULL,
	role          TEXT NOT NULL,
	created       INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS console_tokens (
	id        INTEGER PRIMARY KEY AUTOINCREMENT,
	admin     TEXT NOT NULL COLLATE NOCASE REFERENCES console_admins(name) ON DELETE CASCADE,
	label     TEXT NOT NULL,
	sha256    TEXT NOT NULL UNIQUE,
	created   INTEGER NOT NULL,
	expires   INTEGER NOT NULL,
	last_used INTEGER NOT NULL DEFAULT 0);`)
	if err != nil {
		return nil, fmt.Errorf("console: create tables: %w", err)
	}
	return &Admins{db: db, hasher: userdb.NewHasher(hashMemory), now: time.Now, used: map[int64]time.Time{}}, nil
}

// CheckAdminName checks an admin account name: 1 to 64 printable
// characters without spaces.
func CheckAdminName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("admin name %q: want 1 to 64 characters", name)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("admin name %q: spaces and control characters are not allowed", name)
		}
	}
	return nil
}

func checkRole(role string) error {
	if role != RoleAdmin && role != RoleReadOnly {
		return fmt.Errorf("role %q: want %s or %s", role, RoleAdmin, RoleReadOnly)
	}
	return nil
}

// Add makes an admin account.
func (a *Admins) Add(ctx context.Context, name, password, role string) error {
	if err := CheckAdminName(name); err != nil {
		return err
	}
	if err := checkRole(role); err != nil {
		return err
	}
	h, err := a.hasher.Hash(password)
	if err != nil {
		return err
	}
	_, err = a.db.ExecContext(ctx, `INSERT INTO console_admins (name, password_hash, role, created) VALUES (?, ?, ?, ?)`,
		name, h, role, a.now().UnixMilli())
	if err != nil && strings.Contains(err.Error(), "UNIQUE") {
		return fmt.Errorf("%w: %s", ErrAdminExists, name)
	}
	if err != nil {
		return fmt.Errorf("console: add admin %s: %w", name, err)
	}
	return nil
}

// SetPassword changes an admin's password.
func (a *Admins) SetPassword(ctx context.Context, name, password string) error {
	h, err := a.hasher.Hash(password)
	if err != nil {
		return err
	}
	return oneRow(a.db.ExecContext(ctx, `UPDATE console_admins SET password_hash = ? WHERE name = ?`, h, name))(name)
}

// SetRole changes an admin's role.
func (a *Admins) SetRole(ctx context.Context, name, role string) error {
	if err := checkRole(role); err != nil {
		return err
	}
	return oneRow(a.db.ExecContext(ctx, `UPDATE console_admins SET role = ? WHERE name = ?`, role, name))(name)
}

// Remove deletes an admin account and its tokens.
func (a *Admins) Remove(ctx context.Context, name string) error {
	if _, err := a.db.ExecContext(ctx, `DELETE FROM console_tokens WHERE admin = ?`, name); err != nil {
		return fmt.Errorf("console: remove tokens of %s: %w", name, err)
	}
	return oneRow(a.db.ExecContext(ctx, `DELETE FROM console_admins WHERE name = ?`, name))(name)
}

func oneRow(res sql.Result, err error) func(name string) error {
	return func(name string) error {
		if err != nil {
			return fmt.Errorf("console: admin %s: %w", name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: %s", ErrNoSuchAdmin, name)
		}
		return nil
	}
}

// List returns the admin accounts by name.
func (a *Admins) List(ctx context.Context) ([]Admin, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT name, role, created FROM console_admins ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("console: list admins: %w", err)
	}
	defer rows.Close()
	var out []Admin
	for rows.Next() {
		var ad Admin
		var created int64
		if err := rows.Scan(&ad.Name, &ad.Role, &created); err != nil {
			return nil, err
		}
		ad.Created = time.UnixMilli(created)
		out = append(out, ad)
	}
	return out, rows.Err()
}

// Verify checks an admin's password. An unknown name costs what a wrong
// password does and looks the same (false, nil); err is a store failure.
func (a *Admins) Verify(ctx context.Context, name, password string) (Admin, bool, error) {
	var ad Admin
	var hash string
	var created int64
	err := a.db.QueryRowContext(ctx, `SELECT name, password_hash, role, created FROM console_admins WHERE name = ?`, name).
		Scan(&ad.Name, &hash, &ad.Role, &created)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return Admin{}, false, fmt.Errorf("console: admin %s: %w", name, err)
	}
	ok, verr := a.hasher.Verify(ctx, hash, password)
	if verr != nil {
		return Admin{}, false, fmt.Errorf("console: admin %s: %w", name, verr)
	}
	if !ok || hash == "" {
		return Admin{}, false, nil
	}
	ad.Created = time.UnixMilli(created)
	return ad, true, nil
}

// get returns an admin account (its current role).
func (a *Admins) get(ctx context.Context, name string) (Admin, error) {
	var ad Admin
	var created int64
	err := a.db.QueryRowContext(ctx, `SELECT name, role, created FROM console_admins WHERE name = ?`, name).Scan(&ad.Name, &ad.Role, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Admin{}, fmt.Errorf("%w: %s", ErrNoSuchAdmin, name)
	}
	if err != nil {
		return Admin{}, fmt.Errorf("console: admin %s: %w", name, err)
	}
	ad.Created = time.UnixMilli(created)
	return ad, nil
}

func tokenHash(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// NewToken makes an API token for admin and returns it (the only time it
// is shown) with its record. ttl 0: it does not expire.
func (a *Admins) NewToken(ctx context.Context, admin, label string, ttl time.Duration) (string, Token, error) {
	ad, err := a.get(ctx, admin)
	if err != nil {
		return "", Token{}, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", Token{}, err
	}
	tok := tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	now := a.now()
	t := Token{Admin: ad.Name, Label: label, Created: now}
	var exp int64
	if ttl > 0 {
		t.Expires = now.Add(ttl)
		exp = t.Expires.UnixMilli()
	}
	res, err := a.db.ExecContext(ctx, `INSERT INTO console_tokens (admin, label, sha256, created, expires) VALUES (?, ?, ?, ?, ?)`,
		ad.Name, label, tokenHash(tok), now.UnixMilli(), exp)
	if err != nil {
		return "", Token{}, fmt.Errorf("console: token for %s: %w", admin, err)
	}
	t.ID, _ = res.LastInsertId()
	return tok, t, nil
}

// Tokens lists the tokens (of admin, or of everyone when admin is "").
func (a *Admins) Tokens(ctx context.Context, admin string) ([]Token, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT id, admin, label, created, expires, last_used FROM console_tokens
WHERE ? = '' OR admin = ? ORDER BY id`, admin, admin)
	if err != nil {
		return nil, fmt.Errorf("console: list tokens: %w", err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		var t Token
		var created, exp, used int64
		if err := rows.Scan(&t.ID, &t.Admin, &t.Label, &created, &exp, &used); err != nil {
			return nil, err
		}
		t.Created = time.UnixMilli(created)
		if exp > 0 {
			t.Expires = time.UnixMilli(exp)
		}
		if used > 0 {
			t.LastUsed = time.UnixMilli(used)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// Revoke deletes token id.
func (a *Admins) Revoke(ctx context.Context, id int64) error {
	res, err := a.db.ExecContext(ctx, `DELETE FROM console_tokens WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("console: revoke token %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("console: no token %d", id)
	}
	return nil
}

// CheckToken returns the admin a bearer token belongs to (with its role
// now) and the token's id; ok is false for an unknown, malformed or
// expired token. The token is compared by its SHA-256 (a token is 256
// random bits: no slow hash is needed, and the lookup by hash leaks
// nothing about the token).
func (a *Admins) CheckToken(ctx context.Context, tok string) (Admin, int64, bool, error) {
	if !strings.HasPrefix(tok, tokenPrefix) || len(tok) > 100 {
		return Admin{}, 0, false, nil
	}
	want := tokenHash(tok)
	var id, exp int64
	var name, stored string
	err := a.db.QueryRowContext(ctx, `SELECT id, admin, sha256, expires FROM console_tokens WHERE sha256 = ?`, want).Scan(&id, &name, &stored, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return Admin{}, 0, false, nil
	}
	if err != nil {
		return Admin{}, 0, false, fmt.Errorf("console: token: %w", err)
	}
	now := a.now()
	if subtle.ConstantTimeCompare([]byte(stored), []byte(want)) != 1 || exp > 0 && now.UnixMilli() >= exp {
		return Admin{}, 0, false, nil
	}
	ad, err := a.get(ctx, name)
	if err != nil {
		return Admin{}, 0, false, err
	}
	// last_used is written at most once a minute per token: a script
	// polling the API must not make every request a database write.
	a.mu.Lock()
	write := now.Sub(a.used[id]) >= time.Minute
	if write {
		if len(a.used) > 10000 {
			clear(a.used)
		}
		a.used[id] = now
	}
	a.mu.Unlock()
	if write {
		a.db.ExecContext(ctx, `UPDATE console_tokens SET last_used = ? WHERE id = ?`, now.UnixMilli(), id)
	}
	return ad, id, true, nil
}

// ParseTokenID reads a token id given on the command line.
func ParseTokenID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, fmt.Errorf("token id %q: want a number from \"relayguard admin tokens\"", s)
	}
	return id, nil
}
