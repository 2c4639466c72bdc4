package store

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/relayguard/relayguard/internal/faillog"
)

// Writer is the write transaction this process's frequent writers share on
// one database (the send-limit counters, the accounts' observations): the
// first operation begins a transaction and takes the process's write lock
// (WriteLock), every operation of the next CommitEvery runs in it at once
// and returns at once (one after another, each seeing the ones before it:
// a count is exact; another process's writer waits for the commit, and
// sees every count), and then one commit writes them all. The commit, not
// the statements, was most of a recipient's cost on SQLite
// (BenchmarkRecipients, the milter's profile under Postfix: docs/
// benchmarks/containment.md, round 3).
//
// What this gives up: what an operation wrote is not on disk when it
// returns; a crash within CommitEvery, or a commit or statement that fails
// (the database's I/O; logged), loses the transaction's writes. After a
// lost transaction, and until one commits again, each operation is
// committed before Do returns and a failed commit is its error: a full
// disk loses one transaction's counts, not every count while it lasts
// (the send limits would not hold). Use it for counts and observations,
// never for what was acknowledged to a client (mail, bans).
type Writer struct {
	db     weak.Pointer[sql.DB] // weak: the map of writers must not keep a closed database
	wl     *sync.Mutex
	lost   *faillog.Log // lost transactions: the first, then once a minute, and the recovery
	logSet atomic.Bool

	mu       sync.Mutex // guards tx; operations run one at a time
	tx       *sql.Tx    // the open transaction; while set, this writer holds wl
	ops      int
	enlisted []Enlisted // the open transaction's (Enlist)
	// failing: the last transaction was lost (its commit failed: the
	// file system full…). Until one commits again, each operation is
	// committed before Do returns, and a failed commit is its error.
	failing bool
}

// Enlisted is an operation's owner that keeps what it wrote in memory
// until the transaction ends (the send-limit counts: internal/ratelimit's
// cache): it writes it just before the commit, and learns whether the
// commit happened.
type Enlisted interface {
	// BeforeCommit writes what it kept; an error rolls the whole
	// transaction back.
	BeforeCommit(ctx context.Context, tx *sql.Tx) error
	// Ended says whether the transaction committed. False (rolled back,
	// or the commit failed): nothing it wrote or kept in it may be
	// trusted.
	Ended(committed bool)
}

// Enlist makes e take part in the open transaction (once however often it
// is called): called only from inside an operation of Do, whose f runs
// with the writer locked, as BeforeCommit and Ended do.
func (w *Writer) Enlist(e Enlisted) {
	for _, x := range w.enlisted {
		if x == e {
			return
		}
	}
	w.enlisted = append(w.enlisted, e)
}

// CommitEvery is how long a shared write transaction stays open for the
// operations that follow its first; maxTxOps ends it sooner.
const CommitEvery = 5 * time.Millisecond

const maxTxOps = 512

var writers sync.Map // weak.Pointer[sql.DB] -> *Writer

// SharedWriter returns db's shared write transaction of this process.
func SharedWriter(db *sql.DB) *Writer {
	k := weak.Make(db)
	if w, ok := writers.Load(k); ok {
		return w.(*Writer)
	}
	w, _ := writers.LoadOrStore(k, &Writer{db: k, wl: WriteLock(db), lost: faillog.New(nil,
		"store: committing a shared transaction",
		"its writes are lost; until one commits, each operation is committed before it returns and a failed commit is its error")})
	return w.(*Writer)
}

// SetLogger sets where a lost transaction is logged (the first logger set
// stays).
func (w *Writer) SetLogger(l *slog.Logger) {
	if l != nil && w.logSet.CompareAndSwap(false, true) {
		w.lost.SetLogger(l)
	}
}

// Do runs f in the shared transaction, beginning one when none is open.
// An error of f rolls the whole transaction back (an operation fails only
// when the database does) and is returned.
func (w *Writer) Do(ctx context.Context, f func(context.Context, *sql.Tx) error) error {
	ctx = context.WithoutCancel(ctx) // a caller gone must not break the others' transaction
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tx == nil {
		db := w.db.Value()
		if db == nil {
			return fmt.Errorf("store: begin: database closed")
		}
		w.wl.Lock()
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			w.wl.Unlock()
			return fmt.Errorf("store: begin: %w", err)
		}
		w.tx, w.ops = tx, 0
		time.AfterFunc(CommitEvery, func() { w.commitIf(tx) })
	}
	if err := f(ctx, w.tx); err != nil {
		w.endLocked(err)
		return err
	}
	w.ops++
	if w.failing {
		// The last transaction's writes were lost after their
		// operations had returned (a send-limit count answered "pass"):
		// while commits fail, an operation is answered only once it is
		// committed, so that a count the database cannot keep is an
		// error (the mail deferred), not a pass counted nowhere — a full
		// disk must not lift the send limits. At most one transaction's
		// operations are lost per failure.
		return w.endLocked(nil)
	}
	if w.ops >= maxTxOps {
		w.endLocked(nil)
	}
	return nil
}

// commitIf commits tx if it is still the open transaction.
func (w *Writer) commitIf(tx *sql.Tx) {
	w.mu.Lock()
	if w.tx == tx {
		w.endLocked(nil)
	}
	w.mu.Unlock()
}

// Flush commits the open transaction now: before reading what it wrote
// from another connection, and before the process ends.
func (w *Writer) Flush() {
	w.mu.Lock()
	w.endLocked(nil)
	w.mu.Unlock()
}

// endLocked commits the open transaction, or rolls it back after broken,
// and releases the write lock; it returns why the transaction was lost,
// nil if it committed. w.mu is held.
func (w *Writer) endLocked(broken error) error {
	if w.tx == nil {
		return nil
	}
	tx, n, enlisted := w.tx, w.ops, w.enlisted
	w.tx, w.enlisted = nil, nil
	err := broken
	for _, e := range enlisted {
		if err != nil {
			break
		}
		err = e.BeforeCommit(context.Background(), tx)
	}
	if err == nil {
		err = tx.Commit()
	} else {
		tx.Rollback()
	}
	for _, e := range enlisted {
		e.Ended(err == nil)
	}
	w.wl.Unlock()
	w.failing = err != nil
	if err != nil {
		// On a full disk every operation fails so (see Do): one line for
		// the run, not one per message.
		w.lost.Fail(err, "operations", n)
		return fmt.Errorf("store: a shared transaction of %d operations lost: %w", n, err)
	}
	w.lost.OK()
	return nil
}
