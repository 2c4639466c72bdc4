package guard

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// SQLiteCounters keeps the failure counters (and the successful logins that
// give an address its grace) in the embedded database, so that restarting
// `watch` or `serve` between an attacker's third and fourth failure does not
// reset the count (issue 12 item 12). Tables guard_failures (one row per
// failure), guard_attackers (the last failure of each address inside a
// prefix) and guard_logins (the last successful login of each address).
//
// Every call is one short transaction; in WAL mode with synchronous=NORMAL
// (store.OpenSQLite) a commit does not wait for the disk, so a counted
// event costs tens of microseconds. Rows older than the longest window
// seen are swept now and then.
type SQLiteCounters struct {
	DB *sql.DB

	mu        sync.Mutex
	maxWindow time.Duration
	sweep     time.Time // event time of the last sweep
}

// NewSQLiteCounters creates the tables if needed.
func NewSQLiteCounters(ctx context.Context, db *sql.DB) (*SQLiteCounters, error) {
	_, err := db.ExecContext(ctx, `
CREATE TABLE IF NOT EXISTS guard_failures (ip TEXT NOT NULL, t INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS guard_failures_ip ON guard_failures (ip, t);
CREATE TABLE IF NOT EXISTS guard_attackers (
	prefix TEXT NOT NULL, ip TEXT NOT NULL, t INTEGER NOT NULL, PRIMARY KEY (prefix, ip));
CREATE TABLE IF NOT EXISTS guard_logins (
	ip TEXT PRIMARY KEY, t INTEGER NOT NULL, pop INTEGER NOT NULL);`)
	if err != nil {
		return nil, fmt.Errorf("guard: create counter tables: %w", err)
	}
	return &SQLiteCounters{DB: db}, nil
}

// maybeSweep deletes rows no window can count any more, at most once per
// longest window (in event time).
func (s *SQLiteCounters) maybeSweep(ctx context.Context, t time.Time, window time.Duration) {
	s.mu.Lock()
	s.maxWindow = max(s.maxWindow, window)
	due := t.Sub(s.sweep) >= s.maxWindow
	if due {
		s.sweep = t
	}
	cut := t.Add(-s.maxWindow).UnixNano()
	s.mu.Unlock()
	if !due {
		return
	}
	_, _ = s.DB.ExecContext(ctx, `DELETE FROM guard_failures WHERE t <= ?; DELETE FROM guard_attackers WHERE t <= ?`, cut, cut)
}

// AddFailure implements Counters.
func (s *SQLiteCounters) AddFailure(ctx context.Context, ip netip.Addr, t time.Time, window time.Duration) (int, error) {
	s.maybeSweep(ctx, t, window)
	a := ip.String()
	var n int
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO guard_failures (ip, t) VALUES (?, ?)`, a, t.UnixNano()); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT count(*) FROM guard_failures WHERE ip = ? AND t > ?`, a, t.Add(-window).UnixNano()).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("guard: failure counter %s: %w", ip, err)
	}
	return n, nil
}

// AddAttacker implements Counters.
func (s *SQLiteCounters) AddAttacker(ctx context.Context, p netip.Prefix, ip netip.Addr, t time.Time, window time.Duration) (int, error) {
	s.maybeSweep(ctx, t, window)
	var n int
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO guard_attackers (prefix, ip, t) VALUES (?, ?, ?)
			ON CONFLICT (prefix, ip) DO UPDATE SET t = max(t, excluded.t)`, p.String(), ip.String(), t.UnixNano()); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT count(*) FROM guard_attackers WHERE prefix = ? AND t > ?`, p.String(), t.Add(-window).UnixNano()).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("guard: subnet counter %s: %w", p, err)
	}
	return n, nil
}

// Forget implements Counters.
func (s *SQLiteCounters) Forget(ctx context.Context, ip netip.Addr) error {
	if _, err := s.DB.ExecContext(ctx, `DELETE FROM guard_failures WHERE ip = ?`, ip.String()); err != nil {
		return fmt.Errorf("guard: forget failures of %s: %w", ip, err)
	}
	return nil
}

func (s *SQLiteCounters) tx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Login is the last successful login of an address.
type Login struct {
	IP   netip.Addr
	Time time.Time
	POP  bool // a POP3/IMAP login (POP-before-SMTP)
}

// LoginStore remembers successful logins across restarts: the success
// grace, POP-before-SMTP and the carving of subnet bans around addresses
// that logged in must not be forgotten by a restart (a user whose address
// lies in a banned subnet could not log in again to be remembered).
type LoginStore interface {
	AddLogin(ctx context.Context, l Login) error
	// Logins returns the logins at or after since.
	Logins(ctx context.Context, since time.Time) ([]Login, error)
}

// AddLogin implements LoginStore.
func (s *SQLiteCounters) AddLogin(ctx context.Context, l Login) error {
	_, err := s.DB.ExecContext(ctx, `INSERT INTO guard_logins (ip, t, pop) VALUES (?, ?, ?)
		ON CONFLICT (ip) DO UPDATE SET t = max(t, excluded.t), pop = max(pop, excluded.pop)`, l.IP.String(), l.Time.UnixNano(), l.POP)
	if err != nil {
		return fmt.Errorf("guard: remember login of %s: %w", l.IP, err)
	}
	return nil
}

// Logins implements LoginStore; older rows are deleted.
func (s *SQLiteCounters) Logins(ctx context.Context, since time.Time) ([]Login, error) {
	if _, err := s.DB.ExecContext(ctx, `DELETE FROM guard_logins WHERE t < ?`, since.UnixNano()); err != nil {
		return nil, fmt.Errorf("guard: logins: %w", err)
	}
	rows, err := s.DB.QueryContext(ctx, `SELECT ip, t, pop FROM guard_logins`)
	if err != nil {
		return nil, fmt.Errorf("guard: logins: %w", err)
	}
	defer rows.Close()
	var out []Login
	for rows.Next() {
		var a string
		var t int64
		var l Login
		if err := rows.Scan(&a, &t, &l.POP); err != nil {
			return nil, fmt.Errorf("guard: logins: %w", err)
		}
		if l.IP, err = netip.ParseAddr(a); err != nil {
			continue
		}
		l.Time = time.Unix(0, t)
		out = append(out, l)
	}
	return out, rows.Err()
}
