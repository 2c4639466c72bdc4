package ratelimit

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"time"
)

// SQLStore keeps counters in the embedded SQLite database.
type SQLStore struct {
	db  *sql.DB
	ops atomic.Int64
}

// NewSQLStore creates the tables it needs in db.
func NewSQLStore(ctx context.Context, db *sql.DB) (*SQLStore, error) {
	_, err := db.ExecContext(ctx, `
CREATE TABLE IF NOT EXISTS ratelimit_counters (
	key TEXT NOT NULL,
	window_start INTEGER NOT NULL,
	expires INTEGER NOT NULL,
	count INTEGER NOT NULL,
	PRIMARY KEY (key, window_start)
);
CREATE TABLE IF NOT EXISTS ratelimit_seen (
	user TEXT NOT NULL,
	rcpt TEXT NOT NULL,
	first_seen INTEGER NOT NULL,
	PRIMARY KEY (user, rcpt)
);`)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: creating tables: %w", err)
	}
	return &SQLStore{db: db}, nil
}

// Add implements Store.
func (s *SQLStore) Add(ctx context.Context, key string, start time.Time, window time.Duration, n int64) (int64, error) {
	var c int64
	err := s.db.QueryRowContext(ctx, `
INSERT INTO ratelimit_counters (key, window_start, expires, count) VALUES (?, ?, ?, ?)
ON CONFLICT (key, window_start) DO UPDATE SET count = count + excluded.count
RETURNING count`, key, start.Unix(), start.Add(window).Unix(), n).Scan(&c)
	if err != nil {
		return 0, fmt.Errorf("ratelimit: counter %q: %w", key, err)
	}
	if s.ops.Add(1)%1000 == 0 {
		s.db.ExecContext(ctx, `DELETE FROM ratelimit_counters WHERE expires < ?`, time.Now().Unix())
	}
	return c, nil
}

// Seen implements Store.
func (s *SQLStore) Seen(ctx context.Context, user, rcpt string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM ratelimit_seen WHERE user = ? AND rcpt = ?`, user, rcpt).Scan(&one)
	if err == sql.ErrNoRows {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ratelimit: seen %s -> %s: %w", user, rcpt, err)
	}
	return true, nil
}

// MarkSeen implements Store.
func (s *SQLStore) MarkSeen(ctx context.Context, user, rcpt string, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO ratelimit_seen (user, rcpt, first_seen) VALUES (?, ?, ?)`, user, rcpt, at.Unix())
	if err != nil {
		return fmt.Errorf("ratelimit: mark seen %s -> %s: %w", user, rcpt, err)
	}
	return nil
}
