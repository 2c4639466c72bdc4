package ratelimit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/relayguard/relayguard/internal/store"
)

// SQLStore keeps counters in the embedded SQLite database. Its writes
// go through the process's shared write transaction (store.Writer): each
// is answered at once and exact; up to store.CommitEvery of them are lost
// by a crash (counts, not mail: a sender gets at most that many more
// through).
type SQLStore struct {
	db *sql.DB
	// Statements parsed once: they run for every message or recipient.
	add, seen, markSeen *sql.Stmt
	addPair             *sql.Stmt // two counters at once (Recipient)
	w                   *store.Writer
	ops                 atomic.Int64
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
);
CREATE TABLE IF NOT EXISTS ratelimit_seen_pending (
	user TEXT NOT NULL,
	rcpt TEXT NOT NULL,
	PRIMARY KEY (user, rcpt)
);`)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: creating tables: %w", err)
	}
	add, err := db.PrepareContext(ctx, `
INSERT INTO ratelimit_counters (key, window_start, expires, count) VALUES (?, ?, ?, ?)
ON CONFLICT (key, window_start) DO UPDATE SET count = count + excluded.count
RETURNING count`)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: preparing the counter update: %w", err)
	}
	seen, err := db.PrepareContext(ctx, `SELECT 1 FROM ratelimit_seen WHERE user = ? AND rcpt = ?`)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: preparing the seen lookup: %w", err)
	}
	markSeen, err := db.PrepareContext(ctx, `INSERT OR IGNORE INTO ratelimit_seen (user, rcpt, first_seen) VALUES (?, ?, ?)`)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: preparing the seen update: %w", err)
	}
	addPair, err := db.PrepareContext(ctx, `
INSERT INTO ratelimit_counters (key, window_start, expires, count) VALUES (?, ?, ?, 1), (?, ?, ?, 1)
ON CONFLICT (key, window_start) DO UPDATE SET count = count + excluded.count
RETURNING key, count`)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: preparing the counter update: %w", err)
	}
	return &SQLStore{db: db, add: add, seen: seen, markSeen: markSeen, addPair: addPair, w: store.SharedWriter(db)}, nil
}

// SetLogger sets where a lost transaction is logged.
func (s *SQLStore) SetLogger(l *slog.Logger) { s.w.SetLogger(l) }

// Flush commits the counts of the shared transaction now.
func (s *SQLStore) Flush() { s.w.Flush() }

// Add implements Store.
func (s *SQLStore) Add(ctx context.Context, key string, start time.Time, window time.Duration, n int64) (int64, error) {
	var c int64
	err := s.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return tx.StmtContext(ctx, s.add).QueryRowContext(ctx, key, start.Unix(), start.Add(window).Unix(), n).Scan(&c)
	})
	if err != nil {
		return 0, fmt.Errorf("ratelimit: counter %q: %w", key, err)
	}
	return c, nil
}

// Seen implements Store.
func (s *SQLStore) Seen(ctx context.Context, user, rcpt string) (bool, error) {
	var one int
	found := false
	err := s.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		err := tx.StmtContext(ctx, s.seen).QueryRowContext(ctx, user, rcpt).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("ratelimit: seen %s -> %s: %w", user, rcpt, err)
	}
	return found, nil
}

// MarkSeen implements Store.
func (s *SQLStore) MarkSeen(ctx context.Context, user, rcpt string, at time.Time) error {
	err := s.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.StmtContext(ctx, s.markSeen).ExecContext(ctx, user, rcpt, at.Unix())
		return err
	})
	if err != nil {
		return fmt.Errorf("ratelimit: mark seen %s -> %s: %w", user, rcpt, err)
	}
	return nil
}

// Window is one limit's counter in its current window, as Recipient
// counts it: Max 0 means the limit is off and the counter is not touched.
type Window struct {
	Key   string // limit + "\x00" + key, as Add's key
	Start time.Time
	Len   time.Duration
	Max   int
}

// Recipient counts one recipient of user as Limiter.Rcpt does with Add,
// Seen and MarkSeen, as one operation: total gains 1; unless that passes
// total.Max, and when newr is on and user has not sent to rcpt before,
// newr gains 1; unless that passes newr.Max, rcpt is recorded as seen at
// at. It returns the counts after adding (0 for one not touched).
//
// A new recipient is two statements, not four: the seen record is
// inserted first (whether it was new is the insert's row count), then
// both counters are added in one statement; on the rare refusal the
// transaction undoes what the refusal must not keep (the new count past a
// full total, the seen record past either limit). The transaction is the
// process's shared one (store.Writer): no other writer sees the steps in
// between.
func (s *SQLStore) Recipient(ctx context.Context, user, rcpt string, at time.Time, total, newr Window) (nTotal, nNew int64, err error) {
	err = s.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		nTotal, nNew = 0, 0
		isNew := false
		if newr.Max > 0 {
			res, err := tx.StmtContext(ctx, s.markSeen).ExecContext(ctx, user, rcpt, at.Unix())
			if err != nil {
				return fmt.Errorf("ratelimit: mark seen %s -> %s: %w", user, rcpt, err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("ratelimit: mark seen %s -> %s: %w", user, rcpt, err)
			}
			isNew = n > 0
		}
		switch {
		case isNew && total.Max > 0:
			if err := s.addBoth(ctx, tx, total, newr, &nTotal, &nNew); err != nil {
				return err
			}
		case isNew:
			if err := tx.StmtContext(ctx, s.add).QueryRowContext(ctx, newr.Key, newr.Start.Unix(), newr.Start.Add(newr.Len).Unix(), 1).Scan(&nNew); err != nil {
				return fmt.Errorf("ratelimit: counter %q: %w", newr.Key, err)
			}
		case total.Max > 0:
			if err := tx.StmtContext(ctx, s.add).QueryRowContext(ctx, total.Key, total.Start.Unix(), total.Start.Add(total.Len).Unix(), 1).Scan(&nTotal); err != nil {
				return fmt.Errorf("ratelimit: counter %q: %w", total.Key, err)
			}
		}
		if !isNew {
			return nil
		}
		fullTotal := total.Max > 0 && nTotal > int64(total.Max)
		if !fullTotal && nNew <= int64(newr.Max) {
			return nil
		}
		// Refused: the recipient stays unseen, and past a full total the
		// new-recipient count was never to be added.
		if _, err := tx.ExecContext(ctx, `DELETE FROM ratelimit_seen WHERE user = ? AND rcpt = ?`, user, rcpt); err != nil {
			return fmt.Errorf("ratelimit: unmark seen %s -> %s: %w", user, rcpt, err)
		}
		if fullTotal {
			if _, err := tx.ExecContext(ctx, `UPDATE ratelimit_counters SET count = count - 1 WHERE key = ? AND window_start = ?`, newr.Key, newr.Start.Unix()); err != nil {
				return fmt.Errorf("ratelimit: counter %q: %w", newr.Key, err)
			}
			nNew = 0
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return nTotal, nNew, nil
}

// addBoth adds 1 to the counters of total and newr in one statement.
func (s *SQLStore) addBoth(ctx context.Context, tx *sql.Tx, total, newr Window, nTotal, nNew *int64) error {
	rows, err := tx.StmtContext(ctx, s.addPair).QueryContext(ctx,
		total.Key, total.Start.Unix(), total.Start.Add(total.Len).Unix(),
		newr.Key, newr.Start.Unix(), newr.Start.Add(newr.Len).Unix())
	if err != nil {
		return fmt.Errorf("ratelimit: counters %q, %q: %w", total.Key, newr.Key, err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var c int64
		if err := rows.Scan(&k, &c); err != nil {
			return fmt.Errorf("ratelimit: counters %q, %q: %w", total.Key, newr.Key, err)
		}
		switch k {
		case total.Key:
			*nTotal = c
		case newr.Key:
			*nNew = c
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("ratelimit: counters %q, %q: %w", total.Key, newr.Key, err)
	}
	return nil
}

// do runs f in the shared write transaction; every 1000 operations the
// counters of windows that have ended are dropped.
func (s *SQLStore) do(ctx context.Context, f func(context.Context, *sql.Tx) error) error {
	if err := s.w.Do(ctx, f); err != nil {
		return err
	}
	if s.ops.Add(1)%1000 == 0 {
		s.w.Do(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `DELETE FROM ratelimit_counters WHERE expires < ?`, time.Now().Unix())
			return err
		})
	}
	return nil
}

// counter is one row of ratelimit_counters.
type counter struct {
	key    string
	start  time.Time
	window time.Duration
	count  int64
}

// counters returns the counters of windows that have not ended at now.
func (s *SQLStore) counters(ctx context.Context, now time.Time) ([]counter, error) {
	s.Flush()
	rows, err := s.db.QueryContext(ctx, `SELECT key, window_start, expires, count FROM ratelimit_counters WHERE expires > ?`, now.Unix())
	if err != nil {
		return nil, fmt.Errorf("ratelimit: reading counters: %w", err)
	}
	defer rows.Close()
	var out []counter
	for rows.Next() {
		var c counter
		var start, expires int64
		if err := rows.Scan(&c.key, &start, &expires, &c.count); err != nil {
			return nil, fmt.Errorf("ratelimit: reading counters: %w", err)
		}
		c.start, c.window = time.Unix(start, 0), time.Duration(expires-start)*time.Second
		out = append(out, c)
	}
	return out, rows.Err()
}

// deleteCounter drops one counter.
func (s *SQLStore) deleteCounter(ctx context.Context, c counter) error {
	err := s.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM ratelimit_counters WHERE key = ? AND window_start = ?`, c.key, c.start.Unix())
		return err
	})
	if err != nil {
		return fmt.Errorf("ratelimit: counter %q: %w", c.key, err)
	}
	return nil
}

// addPending remembers a recipient the shared store did not take.
func (s *SQLStore) addPending(ctx context.Context, user, rcpt string) error {
	err := s.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO ratelimit_seen_pending (user, rcpt) VALUES (?, ?)`, user, rcpt)
		return err
	})
	if err != nil {
		return fmt.Errorf("ratelimit: pending seen %s -> %s: %w", user, rcpt, err)
	}
	return nil
}

// pending returns the recipients the shared store did not take, as
// user, rcpt pairs.
func (s *SQLStore) pending(ctx context.Context) ([][2]string, error) {
	s.Flush()
	rows, err := s.db.QueryContext(ctx, `SELECT user, rcpt FROM ratelimit_seen_pending`)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: reading pending recipients: %w", err)
	}
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var p [2]string
		if err := rows.Scan(&p[0], &p[1]); err != nil {
			return nil, fmt.Errorf("ratelimit: reading pending recipients: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// clearPending forgets a pending recipient once the shared store has it.
func (s *SQLStore) clearPending(ctx context.Context, user, rcpt string) error {
	err := s.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM ratelimit_seen_pending WHERE user = ? AND rcpt = ?`, user, rcpt)
		return err
	})
	if err != nil {
		return fmt.Errorf("ratelimit: pending seen %s -> %s: %w", user, rcpt, err)
	}
	return nil
}
