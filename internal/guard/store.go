package guard

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// BanStore persists bans and, per prefix, how often it was banned (for
// escalation). Implemented by SQLiteStore, MemStore and store.Redis.
type BanStore interface {
	PutBan(ctx context.Context, b Ban) error
	DeleteBan(ctx context.Context, p netip.Prefix) error
	ListBans(ctx context.Context) ([]Ban, error)
	// BanCount is how many times p has been banned so far.
	BanCount(ctx context.Context, p netip.Prefix) (int, error)
}

// SQLiteStore keeps bans in the embedded database (tables guard_bans and
// guard_history) and records every change in guard_changes (its
// ChangeFeed), tagged with the store's origin so that a process skips its
// own changes.
type SQLiteStore struct {
	DB     *sql.DB
	origin string // random per store: the changes this process made
	// the statements of apply, prepared once (a server learning a thousand
	// bans a second from the others spent a tenth of its time preparing)
	put, hist, del, change *sql.Stmt
}

// NewSQLiteStore creates the tables if needed.
func NewSQLiteStore(ctx context.Context, db *sql.DB) (*SQLiteStore, error) {
	_, err := db.ExecContext(ctx, `
CREATE TABLE IF NOT EXISTS guard_bans (
	prefix TEXT PRIMARY KEY, until INTEGER NOT NULL, reason TEXT NOT NULL,
	source TEXT NOT NULL, created INTEGER NOT NULL, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS guard_history (
	prefix TEXT PRIMARY KEY, count INTEGER NOT NULL, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS guard_pending (
	prefix TEXT PRIMARY KEY, del INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS guard_meta (
	key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS guard_changes (
	id INTEGER PRIMARY KEY AUTOINCREMENT, prefix TEXT NOT NULL, origin TEXT NOT NULL, at INTEGER NOT NULL);`)
	if err != nil {
		return nil, fmt.Errorf("guard: create tables: %w", err)
	}
	// the database's id (RoundStore), made with it so that its backups
	// hold it
	var id [8]byte
	rand.Read(id[:])
	if _, err := db.ExecContext(ctx, `INSERT INTO guard_meta (key, value) VALUES ('db_id', ?) ON CONFLICT(key) DO NOTHING`, hex.EncodeToString(id[:])); err != nil {
		return nil, fmt.Errorf("guard: database id: %w", err)
	}
	s := &SQLiteStore{DB: db, origin: newOrigin()}
	for _, p := range []struct {
		st  **sql.Stmt
		sql string
	}{
		{&s.put, `INSERT INTO guard_bans (prefix, until, reason, source, created, count)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(prefix) DO UPDATE SET until=excluded.until, reason=excluded.reason,
		source=excluded.source, created=excluded.created, count=excluded.count`},
		{&s.hist, `INSERT INTO guard_history (prefix, count, last) VALUES (?, ?, ?)
		ON CONFLICT(prefix) DO UPDATE SET count=max(count, excluded.count), last=excluded.last`},
		{&s.del, `DELETE FROM guard_bans WHERE prefix = ?`},
		{&s.change, `INSERT INTO guard_changes (prefix, origin, at) VALUES (?, ?, ?)`},
	} {
		if *p.st, err = db.PrepareContext(ctx, p.sql); err != nil {
			return nil, fmt.Errorf("guard: prepare %q: %w", p.sql, err)
		}
	}
	return s, nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// PutBan implements BanStore; it also records the ban in the history.
func (s *SQLiteStore) PutBan(ctx context.Context, b Ban) error {
	return s.Apply(ctx, []Change{{Ban: b}})
}

// DeleteBan implements BanStore.
func (s *SQLiteStore) DeleteBan(ctx context.Context, p netip.Prefix) error {
	return s.Apply(ctx, []Change{{Ban: Ban{Prefix: p}, Delete: true}})
}

// apply writes one change and records it in guard_changes. One statement
// per Exec: the driver (modernc.org/sqlite) binds every statement of a
// multi-statement Exec to the arguments from the first on, so the second
// statement of such an Exec got the first one's values (guard_history
// held the ban's end as its count until this was found).
func (s *SQLiteStore) apply(ctx context.Context, tx *sql.Tx, c Change) error {
	b := c.Ban
	p := b.Prefix.String()
	if c.Delete {
		if _, err := tx.StmtContext(ctx, s.del).ExecContext(ctx, p); err != nil {
			return fmt.Errorf("guard: delete ban %s: %w", p, err)
		}
	} else {
		if _, err := tx.StmtContext(ctx, s.put).ExecContext(ctx, p, unixNano(b.Until), b.Reason, b.Source, unixNano(b.Created), b.Count); err != nil {
			return fmt.Errorf("guard: store ban %s: %w", p, err)
		}
		if _, err := tx.StmtContext(ctx, s.hist).ExecContext(ctx, p, b.Count, unixNano(b.Created)); err != nil {
			return fmt.Errorf("guard: store ban history %s: %w", p, err)
		}
	}
	if _, err := tx.StmtContext(ctx, s.change).ExecContext(ctx, p, s.origin, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("guard: record ban change %s: %w", p, err)
	}
	return nil
}

// ListBans implements BanStore.
func (s *SQLiteStore) ListBans(ctx context.Context) ([]Ban, error) {
	rows, err := s.DB.QueryContext(ctx, `SELECT prefix, until, reason, source, created, count FROM guard_bans`)
	if err != nil {
		return nil, fmt.Errorf("guard: list bans: %w", err)
	}
	defer rows.Close()
	var out []Ban
	for rows.Next() {
		var p string
		var until, created int64
		var b Ban
		if err := rows.Scan(&p, &until, &b.Reason, &b.Source, &created, &b.Count); err != nil {
			return nil, fmt.Errorf("guard: list bans: %w", err)
		}
		if b.Prefix, err = netip.ParsePrefix(p); err != nil {
			return nil, fmt.Errorf("guard: stored ban %q: %w", p, err)
		}
		b.Until, b.Created = fromNano(until), fromNano(created)
		out = append(out, b)
	}
	return out, rows.Err()
}

// BanCount implements BanStore.
func (s *SQLiteStore) BanCount(ctx context.Context, p netip.Prefix) (int, error) {
	var n int
	err := s.DB.QueryRowContext(ctx, `SELECT count FROM guard_history WHERE prefix = ?`, p.String()).Scan(&n)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("guard: ban history %s: %w", p, err)
	}
	return n, nil
}

// Pending is a ban change that could not be written to the shared store.
type Pending struct {
	Prefix netip.Prefix
	Delete bool // the ban was lifted (else added or changed)
}

// PendingStore remembers, across restarts, the ban changes a server made
// while the shared store was unreachable, so that they are written there
// when it returns (see Shared). SQLiteStore and MemStore implement it.
type PendingStore interface {
	AddPending(ctx context.Context, p Pending) error
	ListPending(ctx context.Context) ([]Pending, error)
	// ClearPending forgets ps once they are written (a newer change of
	// the other kind stays).
	ClearPending(ctx context.Context, ps ...Pending) error
}

// AddPending implements PendingStore.
func (s *SQLiteStore) AddPending(ctx context.Context, p Pending) error {
	if _, err := s.DB.ExecContext(ctx, `INSERT INTO guard_pending (prefix, del) VALUES (?, ?)
		ON CONFLICT(prefix) DO UPDATE SET del=excluded.del`, p.Prefix.String(), p.Delete); err != nil {
		return fmt.Errorf("guard: remember pending change of %s: %w", p.Prefix, err)
	}
	return nil
}

// ListPending implements PendingStore.
func (s *SQLiteStore) ListPending(ctx context.Context) ([]Pending, error) {
	rows, err := s.DB.QueryContext(ctx, `SELECT prefix, del FROM guard_pending`)
	if err != nil {
		return nil, fmt.Errorf("guard: list pending changes: %w", err)
	}
	defer rows.Close()
	var out []Pending
	for rows.Next() {
		var ps string
		var p Pending
		if err := rows.Scan(&ps, &p.Delete); err != nil {
			return nil, fmt.Errorf("guard: list pending changes: %w", err)
		}
		if p.Prefix, err = netip.ParsePrefix(ps); err != nil {
			return nil, fmt.Errorf("guard: pending change of %q: %w", ps, err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// ClearPending implements PendingStore, in one transaction: a server that
// made 3,000 changes while Redis was down spent 3-19 s clearing them one
// commit each, holding Shared's lock, so that its decisions waited.
func (s *SQLiteStore) ClearPending(ctx context.Context, ps ...Pending) error {
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("guard: clear %d pending changes: %w", len(ps), err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `DELETE FROM guard_pending WHERE prefix = ? AND del = ?`)
	if err != nil {
		return fmt.Errorf("guard: clear %d pending changes: %w", len(ps), err)
	}
	defer st.Close()
	for _, p := range ps {
		if _, err := st.ExecContext(ctx, p.Prefix.String(), p.Delete); err != nil {
			return fmt.Errorf("guard: clear pending change of %s: %w", p.Prefix, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("guard: clear %d pending changes: %w", len(ps), err)
	}
	return nil
}

// EpochStore remembers, across restarts, the shared store's epoch (its
// data set's token, store.Redis.Epoch) at the last synchronisation and the
// highest change counter this server saw in it, so that a server starting
// again can tell a Redis that lost its data (and may be being refilled by
// the other servers) or came back from an older snapshot from one that
// kept it (see Shared.ListBans). SQLiteStore implements it.
type EpochStore interface {
	SharedEpoch(ctx context.Context) (epoch string, seq int64, err error)
	SetSharedEpoch(ctx context.Context, epoch string, seq int64) error
}

// SharedEpoch implements EpochStore ("" and 0 when never synchronised).
func (s *SQLiteStore) SharedEpoch(ctx context.Context) (string, int64, error) {
	var e string
	var seq int64
	err := s.DB.QueryRowContext(ctx, `SELECT coalesce((SELECT value FROM guard_meta WHERE key = 'shared_epoch'), ''),
		coalesce((SELECT CAST(value AS INTEGER) FROM guard_meta WHERE key = 'shared_seq'), 0)`).Scan(&e, &seq)
	if err != nil {
		return "", 0, fmt.Errorf("guard: read the shared store's epoch: %w", err)
	}
	return e, seq, nil
}

// SetSharedEpoch implements EpochStore (both in one statement).
func (s *SQLiteStore) SetSharedEpoch(ctx context.Context, epoch string, seq int64) error {
	if _, err := s.DB.ExecContext(ctx, `INSERT INTO guard_meta (key, value) VALUES ('shared_epoch', ?), ('shared_seq', ?)
		ON CONFLICT(key) DO UPDATE SET value=excluded.value`, epoch, seq); err != nil {
		return fmt.Errorf("guard: save the shared store's epoch: %w", err)
	}
	return nil
}

// RoundStore numbers the rounds in which a server database's pending
// changes are written to the shared store, so that a database restored
// from a backup does not write again the changes of a round written since
// the backup (Shared.flushPending compares its round with the shared
// store's store.Redis.PendingRounds). SQLiteStore implements it: the
// database's id (random, made once: a backup or a copy keeps it) and
// its count of rounds written, in guard_meta.
type RoundStore interface {
	PendingRounds(ctx context.Context) (db string, rounds int64, err error)
	SetPendingRounds(ctx context.Context, rounds int64) error
}

// PendingRounds implements RoundStore.
func (s *SQLiteStore) PendingRounds(ctx context.Context) (string, int64, error) {
	var db string
	var n int64
	err := s.DB.QueryRowContext(ctx, `SELECT (SELECT value FROM guard_meta WHERE key = 'db_id'),
		coalesce((SELECT CAST(value AS INTEGER) FROM guard_meta WHERE key = 'pending_rounds'), 0)`).Scan(&db, &n)
	if err != nil {
		return "", 0, fmt.Errorf("guard: pending rounds: %w", err)
	}
	return db, n, nil
}

// SetPendingRounds implements RoundStore.
func (s *SQLiteStore) SetPendingRounds(ctx context.Context, n int64) error {
	if _, err := s.DB.ExecContext(ctx, `INSERT INTO guard_meta (key, value) VALUES ('pending_rounds', ?)
		ON CONFLICT(key) DO UPDATE SET value=excluded.value`, n); err != nil {
		return fmt.Errorf("guard: save pending rounds: %w", err)
	}
	return nil
}

// MemStore is a BanStore in memory (replay, tests).
type MemStore struct {
	mu      sync.Mutex
	bans    map[netip.Prefix]Ban
	history map[netip.Prefix]int
	pending map[netip.Prefix]bool
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{bans: map[netip.Prefix]Ban{}, history: map[netip.Prefix]int{}, pending: map[netip.Prefix]bool{}}
}

// AddPending implements PendingStore.
func (m *MemStore) AddPending(_ context.Context, p Pending) error {
	m.mu.Lock()
	m.pending[p.Prefix] = p.Delete
	m.mu.Unlock()
	return nil
}

// ListPending implements PendingStore.
func (m *MemStore) ListPending(context.Context) ([]Pending, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Pending, 0, len(m.pending))
	for p, d := range m.pending {
		out = append(out, Pending{p, d})
	}
	return out, nil
}

// ClearPending implements PendingStore.
func (m *MemStore) ClearPending(_ context.Context, ps ...Pending) error {
	m.mu.Lock()
	for _, p := range ps {
		if d, ok := m.pending[p.Prefix]; ok && d == p.Delete {
			delete(m.pending, p.Prefix)
		}
	}
	m.mu.Unlock()
	return nil
}

// PutBan implements BanStore.
func (m *MemStore) PutBan(_ context.Context, b Ban) error {
	m.mu.Lock()
	m.bans[b.Prefix] = b
	m.history[b.Prefix] = max(m.history[b.Prefix], b.Count)
	m.mu.Unlock()
	return nil
}

// DeleteBan implements BanStore.
func (m *MemStore) DeleteBan(_ context.Context, p netip.Prefix) error {
	m.mu.Lock()
	delete(m.bans, p)
	m.mu.Unlock()
	return nil
}

// ListBans implements BanStore.
func (m *MemStore) ListBans(context.Context) ([]Ban, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Ban, 0, len(m.bans))
	for _, b := range m.bans {
		out = append(out, b)
	}
	return out, nil
}

// BanCount implements BanStore.
func (m *MemStore) BanCount(_ context.Context, p netip.Prefix) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.history[p], nil
}

// SortBans orders bans by address family, then address, then prefix length.
func SortBans(bans []Ban) {
	sort.Slice(bans, func(i, j int) bool {
		a, b := bans[i].Prefix, bans[j].Prefix
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c < 0
		}
		return a.Bits() < b.Bits()
	})
}
