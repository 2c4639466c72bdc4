package accounts

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayguard/relayguard/internal/store"
)

// SQLStore keeps the accounts' state in the embedded SQLite database.
type SQLStore struct {
	db        *sql.DB
	wl        *sync.Mutex   // store.WriteLock: this process's writes, one at a time
	w         *store.Writer // the shared write transaction, for Observe
	tie, sent *sql.Stmt
	ops       atomic.Int64
	// Keep is how long logins, failures, volumes and queue ids are kept
	// (the longest of known_network_age and volume_baseline).
	Keep time.Duration
}

// NewSQLStore creates the accounts_* tables in db.
func NewSQLStore(ctx context.Context, db *sql.DB, keep time.Duration) (*SQLStore, error) {
	_, err := db.ExecContext(ctx, `
CREATE TABLE IF NOT EXISTS accounts_logins (
	user TEXT NOT NULL, network TEXT NOT NULL, last INTEGER NOT NULL,
	PRIMARY KEY (user, network));
CREATE TABLE IF NOT EXISTS accounts_failures (
	user TEXT NOT NULL, ip TEXT NOT NULL, last INTEGER NOT NULL,
	PRIMARY KEY (user, ip));
CREATE TABLE IF NOT EXISTS accounts_sent (
	user TEXT NOT NULL, hour INTEGER NOT NULL, count INTEGER NOT NULL,
	PRIMARY KEY (user, hour));
CREATE TABLE IF NOT EXISTS accounts_outcomes (
	user TEXT NOT NULL, start INTEGER NOT NULL, expires INTEGER NOT NULL, total INTEGER NOT NULL, bad INTEGER NOT NULL,
	PRIMARY KEY (user, start));
CREATE TABLE IF NOT EXISTS accounts_queue_ids (
	host TEXT NOT NULL, qid TEXT NOT NULL, user TEXT NOT NULL, t INTEGER NOT NULL,
	PRIMARY KEY (host, qid));
CREATE INDEX IF NOT EXISTS accounts_queue_ids_user ON accounts_queue_ids (host, user);
CREATE TABLE IF NOT EXISTS accounts_forgiven (user TEXT PRIMARY KEY, since INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts_suspended (
	user TEXT PRIMARY KEY, name TEXT NOT NULL, since INTEGER NOT NULL, signal TEXT NOT NULL,
	evidence TEXT NOT NULL, by TEXT NOT NULL);`)
	if err != nil {
		return nil, fmt.Errorf("accounts: creating tables: %w", err)
	}
	if keep <= 0 {
		keep = 30 * 24 * time.Hour
	}
	tie, err := db.PrepareContext(ctx, `INSERT OR REPLACE INTO accounts_queue_ids (host, qid, user, t) VALUES (?, ?, ?, ?)`)
	if err != nil {
		return nil, fmt.Errorf("accounts: preparing the queue id tie: %w", err)
	}
	sent, err := db.PrepareContext(ctx, `INSERT INTO accounts_sent (user, hour, count) VALUES (?, ?, ?)
ON CONFLICT (user, hour) DO UPDATE SET count = count + excluded.count RETURNING count`)
	if err != nil {
		return nil, fmt.Errorf("accounts: preparing the volume update: %w", err)
	}
	return &SQLStore{db: db, wl: store.WriteLock(db), w: store.SharedWriter(db), tie: tie, sent: sent, Keep: keep}, nil
}

// sweep drops rows older than Keep, every 1000 writes.
func (s *SQLStore) sweep(ctx context.Context, now time.Time) {
	if s.ops.Add(1)%1000 != 0 {
		return
	}
	old := now.Add(-s.Keep).UnixMilli()
	for _, q := range []string{
		`DELETE FROM accounts_logins WHERE last < ?`, `DELETE FROM accounts_failures WHERE last < ?`,
		`DELETE FROM accounts_sent WHERE hour < ?`, `DELETE FROM accounts_queue_ids WHERE t < ?`,
	} {
		s.exec(ctx, q, old)
	}
	s.exec(ctx, `DELETE FROM accounts_outcomes WHERE expires < ?`, now.UnixMilli())
}

// exec runs one write under the process's write lock.
func (s *SQLStore) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	s.wl.Lock()
	defer s.wl.Unlock()
	return s.db.ExecContext(ctx, q, args...)
}

// writeRow runs one write with RETURNING under the process's write lock
// and scans its row into dest.
func (s *SQLStore) writeRow(ctx context.Context, q string, args []any, dest ...any) error {
	s.wl.Lock()
	defer s.wl.Unlock()
	return s.db.QueryRowContext(ctx, q, args...).Scan(dest...)
}

// AddLogin implements Store.
func (s *SQLStore) AddLogin(ctx context.Context, user string, network netip.Prefix, t time.Time, window time.Duration) ([]netip.Prefix, error) {
	u := key(user)
	_, err := s.exec(ctx, `INSERT INTO accounts_logins (user, network, last) VALUES (?, ?, ?)
ON CONFLICT (user, network) DO UPDATE SET last = max(last, excluded.last)`, u, network.String(), t.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("accounts: login of %q: %w", user, err)
	}
	s.sweep(ctx, t)
	rows, err := s.db.QueryContext(ctx, `SELECT network FROM accounts_logins WHERE user = ? AND last >= ?
AND last >= coalesce((SELECT since FROM accounts_forgiven WHERE user = ?), 0) ORDER BY last`, u, t.Add(-window).UnixMilli(), u)
	if err != nil {
		return nil, fmt.Errorf("accounts: logins of %q: %w", user, err)
	}
	defer rows.Close()
	var out []netip.Prefix
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		if p, err := netip.ParsePrefix(n); err == nil {
			out = append(out, p)
		}
	}
	return out, rows.Err()
}

// Forgive implements Store.
func (s *SQLStore) Forgive(ctx context.Context, user string, t time.Time) error {
	_, err := s.exec(ctx, `INSERT OR REPLACE INTO accounts_forgiven (user, since) VALUES (?, ?)`, key(user), t.UnixMilli())
	if err != nil {
		return fmt.Errorf("accounts: forgiving %q: %w", user, err)
	}
	return nil
}

// KnownNetwork implements Store.
func (s *SQLStore) KnownNetwork(ctx context.Context, user string, network netip.Prefix, since time.Time) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM accounts_logins WHERE user = ? AND network = ? AND last >= ?`,
		key(user), network.String(), since.UnixMilli()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("accounts: logins of %q: %w", user, err)
	}
	return true, nil
}

// LoggedIn implements Store.
func (s *SQLStore) LoggedIn(ctx context.Context, user string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM accounts_logins WHERE user = ? LIMIT 1`, key(user)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("accounts: logins of %q: %w", user, err)
	}
	return true, nil
}

// AddFailure implements Store.
func (s *SQLStore) AddFailure(ctx context.Context, user string, ip netip.Addr, t time.Time, window time.Duration) (int, error) {
	_, err := s.exec(ctx, `INSERT INTO accounts_failures (user, ip, last) VALUES (?, ?, ?)
ON CONFLICT (user, ip) DO UPDATE SET last = max(last, excluded.last)`, key(user), ip.Unmap().String(), t.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("accounts: failure of %q: %w", user, err)
	}
	s.sweep(ctx, t)
	return s.Failures(ctx, user, t.Add(-window))
}

// Failures implements Store.
func (s *SQLStore) Failures(ctx context.Context, user string, since time.Time) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM accounts_failures WHERE user = ? AND last >= ?`, key(user), since.UnixMilli()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("accounts: failures of %q: %w", user, err)
	}
	return n, nil
}

// AddSent implements Store.
func (s *SQLStore) AddSent(ctx context.Context, user string, hour time.Time, n int64) (int64, error) {
	var c int64
	s.wl.Lock()
	err := s.sent.QueryRowContext(ctx, key(user), hour.UnixMilli(), n).Scan(&c)
	s.wl.Unlock()
	if err != nil {
		return 0, fmt.Errorf("accounts: volume of %q: %w", user, err)
	}
	s.sweep(ctx, hour)
	return c, nil
}

// Observe writes ties and sent (batchObserver) in the process's shared
// write transaction (store.Writer), with the send-limit counters: no
// commit of their own (two per message were a sixth of the milter's CPU
// under Postfix). Readers of queue ids flush it first (QueueUser,
// QueueIDs).
func (s *SQLStore) Observe(ctx context.Context, host string, ties []QueueTie, sent []SentCount) error {
	err := s.w.Do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		tie := tx.StmtContext(ctx, s.tie)
		for _, t := range ties {
			if _, err := tie.ExecContext(ctx, host, t.QID, key(t.User), t.T.UnixMilli()); err != nil {
				return fmt.Errorf("accounts: queue id %s of %q: %w", t.QID, t.User, err)
			}
		}
		add := tx.StmtContext(ctx, s.sent)
		for i, c := range sent {
			if err := add.QueryRowContext(ctx, key(c.User), c.Hour.UnixMilli(), c.N).Scan(&sent[i].Count); err != nil {
				return fmt.Errorf("accounts: volume of %q: %w", c.User, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	now := time.Now()
	for range len(ties) + len(sent) {
		s.sweep(ctx, now)
	}
	return nil
}

// PeakHour implements Store.
func (s *SQLStore) PeakHour(ctx context.Context, user string, from, to time.Time) (int64, error) {
	var c sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT max(count) FROM accounts_sent WHERE user = ? AND hour >= ? AND hour < ?`,
		key(user), from.UnixMilli(), to.UnixMilli()).Scan(&c)
	if err != nil {
		return 0, fmt.Errorf("accounts: volume of %q: %w", user, err)
	}
	return c.Int64, nil
}

// AddOutcome implements Store.
func (s *SQLStore) AddOutcome(ctx context.Context, user string, start time.Time, window time.Duration, bad bool) (int64, int64, error) {
	b := 0
	if bad {
		b = 1
	}
	var total, nbad int64
	err := s.writeRow(ctx, `INSERT INTO accounts_outcomes (user, start, expires, total, bad) VALUES (?, ?, ?, 1, ?)
ON CONFLICT (user, start) DO UPDATE SET total = total + 1, bad = bad + excluded.bad RETURNING total, bad`,
		[]any{key(user), start.UnixMilli(), start.Add(window).UnixMilli(), b}, &total, &nbad)
	if err != nil {
		return 0, 0, fmt.Errorf("accounts: recipients of %q: %w", user, err)
	}
	return total, nbad, nil
}

// TieQueueID implements Store.
func (s *SQLStore) TieQueueID(ctx context.Context, host, user, qid string, t time.Time) error {
	s.wl.Lock()
	_, err := s.tie.ExecContext(ctx, host, qid, key(user), t.UnixMilli())
	s.wl.Unlock()
	if err != nil {
		return fmt.Errorf("accounts: queue id %s of %q: %w", qid, user, err)
	}
	s.sweep(ctx, t)
	return nil
}

// QueueUser implements Store.
func (s *SQLStore) QueueUser(ctx context.Context, host, qid string) (string, bool, error) {
	s.w.Flush()
	var u string
	err := s.db.QueryRowContext(ctx, `SELECT user FROM accounts_queue_ids WHERE host = ? AND qid = ?`, host, qid).Scan(&u)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("accounts: queue id %s: %w", qid, err)
	}
	return u, true, nil
}

// QueueIDs implements Store.
func (s *SQLStore) QueueIDs(ctx context.Context, host, user string, since time.Time) ([]string, error) {
	s.w.Flush()
	rows, err := s.db.QueryContext(ctx, `SELECT qid FROM accounts_queue_ids WHERE host = ? AND user = ? AND t >= ? ORDER BY t`,
		host, key(user), since.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("accounts: queue ids of %q: %w", user, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var q string
		if err := rows.Scan(&q); err != nil {
			return nil, err
		}
		out = append(out, q)
	}
	return out, rows.Err()
}

// Suspend implements Store.
func (s *SQLStore) Suspend(ctx context.Context, sp Suspension) (bool, error) {
	res, err := s.exec(ctx, `INSERT OR IGNORE INTO accounts_suspended (user, name, since, signal, evidence, by) VALUES (?, ?, ?, ?, ?, ?)`,
		key(sp.User), sp.User, sp.Since.UnixMilli(), sp.Signal, sp.Evidence, sp.By)
	if err != nil {
		return false, fmt.Errorf("accounts: suspending %q: %w", sp.User, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// Unsuspend implements Store.
func (s *SQLStore) Unsuspend(ctx context.Context, user string) (Suspension, bool, error) {
	sp, ok, err := s.Suspended(ctx, user)
	if err != nil || !ok {
		return sp, ok, err
	}
	if _, err := s.exec(ctx, `DELETE FROM accounts_suspended WHERE user = ?`, key(user)); err != nil {
		return Suspension{}, false, fmt.Errorf("accounts: unsuspending %q: %w", user, err)
	}
	return sp, true, nil
}

// Suspended implements Store.
func (s *SQLStore) Suspended(ctx context.Context, user string) (Suspension, bool, error) {
	var sp Suspension
	var since int64
	err := s.db.QueryRowContext(ctx, `SELECT name, since, signal, evidence, by FROM accounts_suspended WHERE user = ?`, key(user)).
		Scan(&sp.User, &since, &sp.Signal, &sp.Evidence, &sp.By)
	if errors.Is(err, sql.ErrNoRows) {
		return Suspension{}, false, nil
	}
	if err != nil {
		return Suspension{}, false, fmt.Errorf("accounts: suspension of %q: %w", user, err)
	}
	sp.Since = time.UnixMilli(since)
	return sp, true, nil
}

// Suspensions implements Store.
func (s *SQLStore) Suspensions(ctx context.Context) ([]Suspension, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, since, signal, evidence, by FROM accounts_suspended ORDER BY since`)
	if err != nil {
		return nil, fmt.Errorf("accounts: suspensions: %w", err)
	}
	defer rows.Close()
	var out []Suspension
	for rows.Next() {
		var sp Suspension
		var since int64
		if err := rows.Scan(&sp.User, &since, &sp.Signal, &sp.Evidence, &sp.By); err != nil {
			return nil, err
		}
		sp.Since = time.UnixMilli(since)
		out = append(out, sp)
	}
	return out, rows.Err()
}
