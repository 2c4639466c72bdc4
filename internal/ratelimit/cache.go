package ratelimit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/relayguard/relayguard/internal/store"
)

// counts is this process's copy of the send-limit counters of one
// database, kept across the shared write transactions (store.Writer), so
// that counting a recipient or a message is arithmetic in memory, not
// statements under the database's write lock (bench/milter: a recipient's
// statements and the message counter were a quarter of the milter's CPU).
//
// Why the copy is exact, across processes (serve, the policy service and
// the milter share one budget per user):
//   - Every write to ratelimit_counters, and every deletion from
//     ratelimit_seen, by any process and any version of relayguard (or by
//     hand), sets ratelimit_gen's one value to a new random number: the
//     triggers are in the database, not in this code.
//   - The copy is used only inside a write transaction (which holds the
//     database's write lock from BEGIN IMMEDIATE to the commit: no other
//     process writes in between), and at the first use in each transaction
//     the generation is read: it must be the one this process's last
//     committed transaction left. Otherwise the copy is dropped and what is
//     needed is read again.
//   - What this process counted in a transaction is written (as additions,
//     RETURNING the database's totals, which must equal the copy's) just
//     before the commit, with a new generation; the copy and the generation
//     are trusted only once the commit succeeded. A rollback, a failed
//     commit or a process killed before it leaves the database as it was
//     and this process with nothing (a restarted one starts empty).
//   - Recipients already seen are remembered (a seen record is never
//     deleted but by a refusal in the transaction that made it, which
//     moves the generation); a recipient not remembered is looked up.
//
// Every field is used only with the writer locked (inside Do's operations
// and the transaction's BeforeCommit and Ended).
type counts struct {
	w   *store.Writer
	log atomic.Pointer[slog.Logger]

	getCount, getSeen, readGen, bumpGen *sql.Stmt
	upsert, seenInsert                  *store.Batch

	tx       *sql.Tx // the transaction enlisted in, nil between them
	valid    bool    // gen is the generation this process's last commit left
	gen      int64
	tainted  bool                  // written to without the copy: drop it at the end
	moved    bool                  // this transaction wrote the counters
	m        map[counterKey]*entry // committed counts, plus this transaction's
	dirty    []*entry              // entries with a delta in this transaction
	seen     map[pair]struct{}     // committed seen records
	newSeen  map[pair]int64        // seen in this transaction: first_seen
	newOrder []pair                // newSeen's keys, in order

	mismatches atomic.Int64 // database totals that were not the copy's
}

type counterKey struct {
	key   string
	start int64
}

type entry struct {
	k       counterKey
	expires int64
	count   int64 // including delta
	delta   int64 // added in the open transaction
}

type pair struct{ user, rcpt string }

// Bounds of the copy: past them it is dropped at the start of a
// transaction and read again as needed.
const (
	maxCachedCounters = 1 << 16
	maxCachedSeen     = 1 << 18
	maxRowsPerWrite   = store.MaxBatchRows
)

// countsOf holds each database's copy of this process, weakly: the copy
// lives as long as a SQLStore uses it (its statements hold the database,
// which a strong entry here would keep for ever).
var (
	countsMu sync.Mutex
	countsOf = map[weak.Pointer[sql.DB]]weak.Pointer[counts]{}
)

// countsFor returns db's copy of this process, preparing its statements
// the first time. One per database: two copies would each trust counts the
// other changed within one transaction.
func countsFor(ctx context.Context, db *sql.DB) (*counts, error) {
	countsMu.Lock()
	defer countsMu.Unlock()
	for k, v := range countsOf {
		if v.Value() == nil {
			delete(countsOf, k)
		}
	}
	k := weak.Make(db)
	if c := countsOf[k].Value(); c != nil {
		return c, nil
	}
	c := &counts{w: store.SharedWriter(db),
		upsert: store.NewBatch(db, `INSERT INTO ratelimit_counters (key, window_start, expires, count) VALUES `, "(?, ?, ?, ?)",
			` ON CONFLICT (key, window_start) DO UPDATE SET count = count + excluded.count RETURNING key, window_start, count`),
		seenInsert: store.NewBatch(db, `INSERT OR IGNORE INTO ratelimit_seen (user, rcpt, first_seen) VALUES `, "(?, ?, ?)", ""),
		m:          map[counterKey]*entry{}, seen: map[pair]struct{}{}, newSeen: map[pair]int64{}}
	for _, s := range []struct {
		p    **sql.Stmt
		text string
	}{
		{&c.getCount, `SELECT count, expires FROM ratelimit_counters WHERE key = ? AND window_start = ?`},
		{&c.getSeen, `SELECT 1 FROM ratelimit_seen WHERE user = ? AND rcpt = ?`},
		{&c.readGen, `SELECT gen FROM ratelimit_gen WHERE id = 1`},
		{&c.bumpGen, `UPDATE ratelimit_gen SET gen = random() WHERE id = 1 RETURNING gen`},
	} {
		st, err := db.PrepareContext(ctx, s.text)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: preparing %q: %w", s.text, err)
		}
		*s.p = st
	}
	countsOf[k] = weak.Make(c)
	return c, nil
}

// generationSchema is the generation and the triggers that move it (see
// counts). random(): a database restored from a copy cannot come back to
// the value a process remembers with other counts.
const generationSchema = `
CREATE TABLE IF NOT EXISTS ratelimit_gen (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	gen INTEGER NOT NULL
);
INSERT OR IGNORE INTO ratelimit_gen (id, gen) VALUES (1, random());
CREATE TRIGGER IF NOT EXISTS ratelimit_counters_insert AFTER INSERT ON ratelimit_counters
	BEGIN UPDATE ratelimit_gen SET gen = random() WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS ratelimit_counters_update AFTER UPDATE ON ratelimit_counters
	BEGIN UPDATE ratelimit_gen SET gen = random() WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS ratelimit_counters_delete AFTER DELETE ON ratelimit_counters
	BEGIN UPDATE ratelimit_gen SET gen = random() WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS ratelimit_seen_delete AFTER DELETE ON ratelimit_seen
	BEGIN UPDATE ratelimit_gen SET gen = random() WHERE id = 1; END;`

// join enlists the copy in tx at its first use there and checks the
// generation.
func (c *counts) join(ctx context.Context, tx *sql.Tx) error {
	if c.tx == tx {
		return nil
	}
	c.tx = tx
	c.w.Enlist(c)
	if len(c.m) > maxCachedCounters || len(c.seen) > maxCachedSeen {
		c.valid = false
	}
	var g int64
	err := tx.StmtContext(ctx, c.readGen).QueryRowContext(ctx).Scan(&g)
	if errors.Is(err, sql.ErrNoRows) {
		// The row deleted (by hand: every ratelimit_ table emptied):
		// put back with a new value, and the copy read again. Without
		// it every count would fail until a restart (all authenticated
		// mail deferred).
		c.valid = false
		err = tx.QueryRowContext(ctx, `INSERT INTO ratelimit_gen (id, gen) VALUES (1, random()) RETURNING gen`).Scan(&g)
	}
	if err != nil {
		return fmt.Errorf("ratelimit: reading the counters' generation: %w", err)
	}
	if !c.valid || g != c.gen {
		clear(c.m)
		clear(c.seen)
	}
	c.gen, c.valid = g, true
	return nil
}

// entry returns the counter (key, start) as this transaction sees it.
func (c *counts) entry(ctx context.Context, tx *sql.Tx, key string, start time.Time, window time.Duration) (*entry, error) {
	k := counterKey{key, start.Unix()}
	if e, ok := c.m[k]; ok {
		return e, nil
	}
	e := &entry{k: k, expires: start.Add(window).Unix()}
	err := tx.StmtContext(ctx, c.getCount).QueryRowContext(ctx, key, k.start).Scan(&e.count, &e.expires)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("ratelimit: counter %q: %w", key, err)
	}
	c.m[k] = e
	return e, nil
}

// add adds n to e in this transaction.
func (c *counts) add(e *entry, n int64) {
	if n == 0 {
		return
	}
	if e.delta == 0 {
		c.dirty = append(c.dirty, e)
	}
	e.count += n
	e.delta += n
}

// isSeen reports whether user has sent to rcpt, as this transaction sees
// it.
func (c *counts) isSeen(ctx context.Context, tx *sql.Tx, p pair) (bool, error) {
	if _, ok := c.seen[p]; ok {
		return true, nil
	}
	if _, ok := c.newSeen[p]; ok {
		return true, nil
	}
	var one int
	err := tx.StmtContext(ctx, c.getSeen).QueryRowContext(ctx, p.user, p.rcpt).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ratelimit: seen %s -> %s: %w", p.user, p.rcpt, err)
	}
	c.seen[p] = struct{}{}
	return true, nil
}

// markSeen records in this transaction that user has sent to rcpt.
func (c *counts) markSeen(p pair, at int64) {
	if _, ok := c.newSeen[p]; !ok {
		c.newSeen[p] = at
		c.newOrder = append(c.newOrder, p)
	}
}

// BeforeCommit implements store.Enlisted: what was counted in the
// transaction is written, and the generation moved.
func (c *counts) BeforeCommit(ctx context.Context, tx *sql.Tx) error {
	if len(c.dirty) == 0 && len(c.newOrder) == 0 && !c.moved {
		return nil // read only: the generation is the one read at join
	}
	if err := c.writeBack(ctx, tx); err != nil {
		return err
	}
	if !c.moved {
		return nil
	}
	if err := tx.StmtContext(ctx, c.bumpGen).QueryRowContext(ctx).Scan(&c.gen); err != nil {
		return fmt.Errorf("ratelimit: moving the counters' generation: %w", err)
	}
	return nil
}

// writeBack writes the transaction's additions and seen records.
func (c *counts) writeBack(ctx context.Context, tx *sql.Tx) error {
	c.moved = c.moved || len(c.dirty) > 0 // seen records move no generation
	for len(c.dirty) > 0 {
		n := min(len(c.dirty), maxRowsPerWrite)
		if err := c.writeCounters(ctx, tx, c.dirty[:n]); err != nil {
			return err
		}
		for _, e := range c.dirty[:n] {
			e.delta = 0
		}
		c.dirty = c.dirty[n:]
	}
	c.dirty = nil
	for len(c.newOrder) > 0 {
		n := min(len(c.newOrder), maxRowsPerWrite)
		batch := c.newOrder[:n]
		st, err := c.seenInsert.Stmt(ctx, tx, n)
		if err != nil {
			return fmt.Errorf("ratelimit: %w", err)
		}
		args := make([]any, 0, 3*n)
		for _, p := range batch {
			args = append(args, p.user, p.rcpt, c.newSeen[p])
		}
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("ratelimit: writing %d seen recipients: %w", n, err)
		}
		for _, p := range batch {
			c.seen[p] = struct{}{}
			delete(c.newSeen, p)
		}
		c.newOrder = c.newOrder[n:]
	}
	c.newOrder = nil
	return nil
}

// writeCounters adds the deltas of batch to the database, whose totals
// must then be the copy's.
func (c *counts) writeCounters(ctx context.Context, tx *sql.Tx, batch []*entry) error {
	st, err := c.upsert.Stmt(ctx, tx, len(batch))
	if err != nil {
		return fmt.Errorf("ratelimit: %w", err)
	}
	args := make([]any, 0, 4*len(batch))
	byKey := make(map[counterKey]*entry, len(batch))
	for _, e := range batch {
		args = append(args, e.k.key, e.k.start, e.expires, e.delta)
		byKey[e.k] = e
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return fmt.Errorf("ratelimit: writing %d counters: %w", len(batch), err)
	}
	defer rows.Close()
	for rows.Next() {
		var k counterKey
		var n int64
		if err := rows.Scan(&k.key, &k.start, &n); err != nil {
			return fmt.Errorf("ratelimit: writing %d counters: %w", len(batch), err)
		}
		if e := byKey[k]; e != nil && e.count != n {
			// Not expected (a writer without the triggers?): the
			// database's total wins, and the copy is dropped.
			c.mismatches.Add(1)
			c.logger().Error("ratelimit: a cached count was not the database's; cache dropped", "counter", strings.ReplaceAll(k.key, "\x00", " "), "cached", e.count, "database", n)
			e.count = n
			c.tainted = true
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("ratelimit: writing %d counters: %w", len(batch), err)
	}
	return nil
}

// Ended implements store.Enlisted: the copy is trusted from now on only
// if the transaction committed.
func (c *counts) Ended(committed bool) {
	c.tx, c.moved = nil, false
	if committed && !c.tainted {
		return
	}
	c.valid, c.tainted = false, false
	clear(c.m)
	clear(c.seen)
	clear(c.newSeen)
	c.dirty, c.newOrder = nil, nil
}

// written is called by an operation that wrote the counters itself
// (statements, not the copy), after writing the copy's additions first
// (writeBack): the copy is dropped when the transaction ends.
func (c *counts) written() { c.tainted = true }

// pruned drops the copy's counters that ended before now, as the
// operation that deleted them from the database.
func (c *counts) pruned(now int64) {
	c.moved = true
	for k, e := range c.m {
		if e.expires < now && e.delta == 0 {
			delete(c.m, k)
		}
	}
}

func (c *counts) logger() *slog.Logger {
	if l := c.log.Load(); l != nil {
		return l
	}
	return slog.Default()
}
