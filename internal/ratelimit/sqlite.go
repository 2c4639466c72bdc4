package ratelimit

import (
	"context"
	"database/sql"
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
// through). Counting is done on this process's copy of the counters
// (counts, cache.go), exact across processes, and written at the commit.
type SQLStore struct {
	db  *sql.DB
	c   *counts
	w   *store.Writer
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
);
CREATE TABLE IF NOT EXISTS ratelimit_seen_pending (
	user TEXT NOT NULL,
	rcpt TEXT NOT NULL,
	PRIMARY KEY (user, rcpt)
);`+generationSchema)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: creating tables: %w", err)
	}
	c, err := countsFor(ctx, db)
	if err != nil {
		return nil, err
	}
	return &SQLStore{db: db, c: c, w: c.w}, nil
}

// SetLogger sets where a lost transaction is logged.
func (s *SQLStore) SetLogger(l *slog.Logger) {
	s.w.SetLogger(l)
	if l != nil {
		s.c.log.CompareAndSwap(nil, l)
	}
}

// Flush commits the counts of the shared transaction now.
func (s *SQLStore) Flush() { s.w.Flush() }

// Add implements Store.
func (s *SQLStore) Add(ctx context.Context, key string, start time.Time, window time.Duration, n int64) (int64, error) {
	var c int64
	err := s.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		e, err := s.c.entry(ctx, tx, key, start, window)
		if err != nil {
			return err
		}
		s.c.add(e, n)
		c = e.count
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ratelimit: counter %q: %w", key, err)
	}
	return c, nil
}

// Seen implements Store.
func (s *SQLStore) Seen(ctx context.Context, user, rcpt string) (bool, error) {
	found := false
	err := s.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		found, err = s.c.isSeen(ctx, tx, pair{user, rcpt})
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
		s.c.markSeen(pair{user, rcpt}, at.Unix())
		return nil
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
// at. It returns the counts after adding (0 for one not touched). It is
// arithmetic on the process's copy of the counters (counts), in the
// shared transaction: no other writer sees the steps in between.
func (s *SQLStore) Recipient(ctx context.Context, user, rcpt string, at time.Time, total, newr Window) (nTotal, nNew int64, err error) {
	err = s.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		nTotal, nNew = 0, 0
		p := pair{user, rcpt}
		isNew := false
		if newr.Max > 0 {
			seen, err := s.c.isSeen(ctx, tx, p)
			if err != nil {
				return err
			}
			isNew = !seen
		}
		if total.Max > 0 {
			e, err := s.c.entry(ctx, tx, total.Key, total.Start, total.Len)
			if err != nil {
				return err
			}
			s.c.add(e, 1)
			nTotal = e.count
			if nTotal > int64(total.Max) {
				// Refused by the total: a new recipient stays unseen
				// and adds nothing to the new-recipient count.
				return nil
			}
		}
		if !isNew {
			return nil
		}
		e, err := s.c.entry(ctx, tx, newr.Key, newr.Start, newr.Len)
		if err != nil {
			return err
		}
		s.c.add(e, 1)
		nNew = e.count
		if nNew <= int64(newr.Max) {
			s.c.markSeen(p, at.Unix())
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return nTotal, nNew, nil
}

// do runs f in the shared write transaction, with the copy of the
// counters joined to it; every 1000 operations the counters of windows
// that have ended are dropped.
func (s *SQLStore) do(ctx context.Context, f func(context.Context, *sql.Tx) error) error {
	err := s.w.Do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.c.join(ctx, tx); err != nil {
			return err
		}
		return f(ctx, tx)
	})
	if err != nil {
		return err
	}
	if s.ops.Add(1)%1000 == 0 {
		s.w.Do(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if err := s.c.join(ctx, tx); err != nil {
				return err
			}
			if err := s.c.writeBack(ctx, tx); err != nil {
				return err
			}
			now := time.Now().Unix()
			if _, err := tx.ExecContext(ctx, `DELETE FROM ratelimit_counters WHERE expires < ?`, now); err != nil {
				return err
			}
			s.c.pruned(now)
			return nil
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
		if err := s.c.writeBack(ctx, tx); err != nil {
			return err
		}
		s.c.written()
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
