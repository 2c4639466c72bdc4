package ratelimit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayguard/relayguard/internal/store"
)

// SQLStore keeps counters in the embedded SQLite database.
type SQLStore struct {
	db *sql.DB
	// Statements parsed once: they run for every message or recipient.
	add, seen, markSeen *sql.Stmt
	wl                  *sync.Mutex // store.WriteLock: this process's writes, one at a time
	qmu                 sync.Mutex  // guards queue
	queue               []*batchOp  // operations waiting for the next shared transaction
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
	return &SQLStore{db: db, add: add, seen: seen, markSeen: markSeen, wl: store.WriteLock(db)}, nil
}

// Add implements Store.
func (s *SQLStore) Add(ctx context.Context, key string, start time.Time, window time.Duration, n int64) (int64, error) {
	var c int64
	s.wl.Lock()
	err := s.add.QueryRowContext(ctx, key, start.Unix(), start.Add(window).Unix(), n).Scan(&c)
	s.wl.Unlock()
	if err != nil {
		return 0, fmt.Errorf("ratelimit: counter %q: %w", key, err)
	}
	if s.ops.Add(1)%1000 == 0 {
		s.wl.Lock()
		s.db.ExecContext(ctx, `DELETE FROM ratelimit_counters WHERE expires < ?`, time.Now().Unix())
		s.wl.Unlock()
	}
	return c, nil
}

// Seen implements Store.
func (s *SQLStore) Seen(ctx context.Context, user, rcpt string) (bool, error) {
	var one int
	err := s.seen.QueryRowContext(ctx, user, rcpt).Scan(&one)
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
	s.wl.Lock()
	_, err := s.markSeen.ExecContext(ctx, user, rcpt, at.Unix())
	s.wl.Unlock()
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
// Seen and MarkSeen, but in one transaction: total gains 1; unless that
// passes total.Max, and when newr is on and user has not sent to rcpt
// before, newr gains 1; unless that passes newr.Max, rcpt is recorded as
// seen at at. It returns the counts after adding (0 for one not touched).
//
// The recipients of concurrent sessions share one commit (group commit,
// batch): a commit writes the changed pages to the WAL and was half of a
// recipient's cost (BenchmarkAuthenticatedMessage's CPU profile). Each
// recipient is still counted in turn, seeing the ones before it.
func (s *SQLStore) Recipient(ctx context.Context, user, rcpt string, at time.Time, total, newr Window) (nTotal, nNew int64, err error) {
	err = s.batch(ctx, func(ctx context.Context, tx *sql.Tx) error {
		nTotal, nNew = 0, 0
		add := tx.StmtContext(ctx, s.add)
		if total.Max > 0 {
			if err := add.QueryRowContext(ctx, total.Key, total.Start.Unix(), total.Start.Add(total.Len).Unix(), 1).Scan(&nTotal); err != nil {
				return fmt.Errorf("ratelimit: counter %q: %w", total.Key, err)
			}
		}
		if newr.Max <= 0 || (total.Max > 0 && nTotal > int64(total.Max)) {
			return nil
		}
		var one int
		switch err := tx.StmtContext(ctx, s.seen).QueryRowContext(ctx, user, rcpt).Scan(&one); {
		case err == nil:
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("ratelimit: seen %s -> %s: %w", user, rcpt, err)
		}
		if err := add.QueryRowContext(ctx, newr.Key, newr.Start.Unix(), newr.Start.Add(newr.Len).Unix(), 1).Scan(&nNew); err != nil {
			return fmt.Errorf("ratelimit: counter %q: %w", newr.Key, err)
		}
		if nNew > int64(newr.Max) {
			return nil
		}
		if _, err := tx.StmtContext(ctx, s.markSeen).ExecContext(ctx, user, rcpt, at.Unix()); err != nil {
			return fmt.Errorf("ratelimit: mark seen %s -> %s: %w", user, rcpt, err)
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return nTotal, nNew, nil
}

// batchOp is one caller's work in a shared transaction.
type batchOp struct {
	f    func(context.Context, *sql.Tx) error
	err  error
	done chan struct{}
}

// batch runs f in a transaction shared with the other callers waiting
// meanwhile: whoever holds the write lock runs every queued operation in
// one transaction and one commit, in the order they came. A failed
// operation fails alone (its savepoint is rolled back); a failed commit
// fails them all, and nothing of theirs is kept.
func (s *SQLStore) batch(ctx context.Context, f func(context.Context, *sql.Tx) error) error {
	op := &batchOp{f: f, done: make(chan struct{})}
	s.qmu.Lock()
	s.queue = append(s.queue, op)
	s.qmu.Unlock()
	s.wl.Lock()
	s.qmu.Lock()
	ops := s.queue
	s.queue = nil
	s.qmu.Unlock()
	if len(ops) > 0 {
		s.runBatch(context.WithoutCancel(ctx), ops)
	}
	s.wl.Unlock()
	// Done by now: by this caller, or by the one that held the lock before.
	<-op.done
	return op.err
}

func (s *SQLStore) runBatch(ctx context.Context, ops []*batchOp) {
	defer func() {
		for _, op := range ops {
			close(op.done)
		}
	}()
	fail := func(err error) {
		for _, op := range ops {
			if op.err == nil {
				op.err = err
			}
		}
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		fail(fmt.Errorf("ratelimit: begin: %w", err))
		return
	}
	for _, op := range ops {
		if len(ops) == 1 {
			op.err = op.f(ctx, tx)
			continue
		}
		if _, err := tx.ExecContext(ctx, "SAVEPOINT op"); err != nil {
			op.err = fmt.Errorf("ratelimit: savepoint: %w", err)
			continue
		}
		if op.err = op.f(ctx, tx); op.err != nil {
			tx.ExecContext(ctx, "ROLLBACK TO op")
		}
		tx.ExecContext(ctx, "RELEASE op")
	}
	if err := tx.Commit(); err != nil {
		fail(fmt.Errorf("ratelimit: commit: %w", err))
		return
	}
	if s.ops.Add(int64(len(ops)))%1000 < int64(len(ops)) {
		s.db.ExecContext(ctx, `DELETE FROM ratelimit_counters WHERE expires < ?`, time.Now().Unix())
	}
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
	_, err := s.db.ExecContext(ctx, `DELETE FROM ratelimit_counters WHERE key = ? AND window_start = ?`, c.key, c.start.Unix())
	if err != nil {
		return fmt.Errorf("ratelimit: counter %q: %w", c.key, err)
	}
	return nil
}

// addPending remembers a recipient the shared store did not take.
func (s *SQLStore) addPending(ctx context.Context, user, rcpt string) error {
	_, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO ratelimit_seen_pending (user, rcpt) VALUES (?, ?)`, user, rcpt)
	if err != nil {
		return fmt.Errorf("ratelimit: pending seen %s -> %s: %w", user, rcpt, err)
	}
	return nil
}

// pending returns the recipients the shared store did not take, as
// user, rcpt pairs.
func (s *SQLStore) pending(ctx context.Context) ([][2]string, error) {
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
	_, err := s.db.ExecContext(ctx, `DELETE FROM ratelimit_seen_pending WHERE user = ? AND rcpt = ?`, user, rcpt)
	if err != nil {
		return fmt.Errorf("ratelimit: pending seen %s -> %s: %w", user, rcpt, err)
	}
	return nil
}
