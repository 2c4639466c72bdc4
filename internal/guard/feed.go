package guard

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Change is one change of the ban list: b added or replaced, or the ban of
// b.Prefix lifted.
type Change struct {
	Ban    Ban
	Delete bool
}

// ErrResync is returned by ChangeFeed.Changes when the changes since the
// cursor cannot be told (the feed was pruned past it, the shared store's
// announcements were interrupted): the reader must list the whole store.
var ErrResync = errors.New("guard: ban changes lost; list the whole store")

// ChangeFeed is a BanStore that tells what changed since a cursor, so that
// a running guard reads only the changes made by others (another process
// on the same database, another server through Redis) instead of the whole
// list every second. SQLiteStore and Shared implement it.
type ChangeFeed interface {
	// Cursor is the position of the latest change; take it before
	// ListBans, so that Changes(Cursor) misses nothing made after.
	Cursor(ctx context.Context) (int64, error)
	// Changes returns, in order, the changes made by others after the
	// cursor, and the new cursor; ErrResync when they cannot be told.
	Changes(ctx context.Context, after int64) ([]Change, int64, error)
}

// changeKeep is how long guard_changes keeps a change: a reader further
// behind lists the whole store instead.
const changeKeep = 10 * time.Minute

func newOrigin() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Cursor implements ChangeFeed.
func (s *SQLiteStore) Cursor(ctx context.Context) (int64, error) {
	var n int64
	if err := s.DB.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM guard_changes`).Scan(&n); err != nil {
		return 0, fmt.Errorf("guard: ban change cursor: %w", err)
	}
	return n, nil
}

// Changes implements ChangeFeed: the changes of other processes after
// after, each read as the ban's current row (none: lifted).
func (s *SQLiteStore) Changes(ctx context.Context, after int64) ([]Change, int64, error) {
	tx, err := s.DB.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, after, fmt.Errorf("guard: ban changes: %w", err)
	}
	defer tx.Rollback()
	var first, last sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT min(id), max(id) FROM guard_changes`).Scan(&first, &last); err != nil {
		return nil, after, fmt.Errorf("guard: ban changes: %w", err)
	}
	if !last.Valid || last.Int64 <= after {
		if last.Int64 < after { // the database was replaced
			return nil, after, ErrResync
		}
		return nil, after, nil
	}
	if first.Int64 > after+1 { // pruned past the cursor
		return nil, after, ErrResync
	}
	rows, err := tx.QueryContext(ctx, `SELECT c.prefix, b.until, b.reason, b.source, b.created, b.count
		FROM guard_changes c LEFT JOIN guard_bans b ON b.prefix = c.prefix
		WHERE c.id > ? AND c.id <= ? AND c.origin != ? ORDER BY c.id`, after, last.Int64, s.origin)
	if err != nil {
		return nil, after, fmt.Errorf("guard: ban changes: %w", err)
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var ps string
		var until, created, count sql.NullInt64
		var reason, source sql.NullString
		if err := rows.Scan(&ps, &until, &reason, &source, &created, &count); err != nil {
			return nil, after, fmt.Errorf("guard: ban changes: %w", err)
		}
		p, err := netip.ParsePrefix(ps)
		if err != nil {
			return nil, after, fmt.Errorf("guard: ban change of %q: %w", ps, err)
		}
		c := Change{Ban: Ban{Prefix: p}, Delete: !until.Valid}
		if until.Valid {
			c.Ban.Until, c.Ban.Created = fromNano(until.Int64), fromNano(created.Int64)
			c.Ban.Reason, c.Ban.Source, c.Ban.Count = reason.String, source.String, int(count.Int64)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, after, fmt.Errorf("guard: ban changes: %w", err)
	}
	return out, last.Int64, nil
}

// Apply writes changes in one transaction (the changes a server learnt
// from the others through Redis, applied to its own database).
func (s *SQLiteStore) Apply(ctx context.Context, changes []Change) error {
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("guard: store %d ban changes: %w", len(changes), err)
	}
	defer tx.Rollback()
	for _, c := range changes {
		if err := s.apply(ctx, tx, c); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("guard: store %d ban changes: %w", len(changes), err)
	}
	return nil
}

// PruneChanges forgets the changes older than changeKeep, always keeping
// the latest (the cursor's reference).
func (s *SQLiteStore) PruneChanges(ctx context.Context, now time.Time) error {
	if _, err := s.DB.ExecContext(ctx, `DELETE FROM guard_changes WHERE at < ? AND id < (SELECT max(id) FROM guard_changes)`,
		now.Add(-changeKeep).UnixNano()); err != nil {
		return fmt.Errorf("guard: prune ban changes: %w", err)
	}
	return nil
}
