package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
)

// MaxBatchRows is the most rows one statement of a Batch writes; more are
// written in several.
const MaxBatchRows = 32

// Batch is one statement that writes many rows at once — head, then row
// repeated n times (comma-separated), then tail — prepared once for each
// n (SQLite has no array parameters; one statement for many rows instead
// of one per row saves each row database/sql's and SQLite's per-statement
// work).
type Batch struct {
	db              *sql.DB
	head, row, tail string

	mu sync.Mutex
	by map[int]*sql.Stmt
}

// NewBatch returns the statement head + n×row + tail on db.
func NewBatch(db *sql.DB, head, row, tail string) *Batch {
	return &Batch{db: db, head: head, row: row, tail: tail, by: map[int]*sql.Stmt{}}
}

// Stmt returns the statement of n rows (1 ≤ n ≤ MaxBatchRows) in tx.
func (b *Batch) Stmt(ctx context.Context, tx *sql.Tx, n int) (*sql.Stmt, error) {
	if n < 1 || n > MaxBatchRows {
		return nil, fmt.Errorf("store: a batch of %d rows (1 to %d)", n, MaxBatchRows)
	}
	b.mu.Lock()
	st, ok := b.by[n]
	b.mu.Unlock()
	if ok {
		return tx.StmtContext(ctx, st), nil
	}
	text := b.head + strings.TrimSuffix(strings.Repeat(b.row+", ", n), ", ") + b.tail
	st, err := b.db.PrepareContext(ctx, text)
	if err != nil {
		// The database is being closed (an open transaction's
		// connection stays until its end): prepared for tx alone.
		if st, err := tx.PrepareContext(ctx, text); err == nil {
			return st, nil
		}
		return nil, fmt.Errorf("store: preparing a %d-row write: %w", n, err)
	}
	b.mu.Lock()
	if old, ok := b.by[n]; ok {
		st.Close()
		st = old
	} else {
		b.by[n] = st
	}
	b.mu.Unlock()
	return tx.StmtContext(ctx, st), nil
}
