package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"
)

// recorder is an Enlisted that writes one row before the commit (or
// fails) and records what it was told.
type recorder struct {
	fail  error
	ended []bool
}

func (r *recorder) BeforeCommit(ctx context.Context, tx *sql.Tx) error {
	if r.fail != nil {
		return r.fail
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO n (k) VALUES (100)`)
	return err
}

func (r *recorder) Ended(committed bool) { r.ended = append(r.ended, committed) }

// What an enlisted owner writes before the commit is committed with the
// transaction's operations (by the committer, CommitEvery later); its
// failure rolls them all back and it is told so; an owner enlisted twice
// is called once.
func TestWriterEnlisted(t *testing.T) {
	ctx := context.Background()
	db, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE n (k INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	w := SharedWriter(db)
	rows := func() string {
		var s string
		if err := db.QueryRowContext(ctx, `SELECT coalesce(group_concat(k), '') FROM n`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	r := &recorder{}
	for k := range 2 {
		if err := w.Do(ctx, func(ctx context.Context, tx *sql.Tx) error {
			w.Enlist(r)
			_, err := tx.ExecContext(ctx, `INSERT INTO n (k) VALUES (?)`, k)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Not flushed: committed CommitEvery after it began.
	deadline := time.Now().Add(5 * time.Second)
	for rows() != "0,1,100" {
		if time.Now().After(deadline) {
			t.Fatalf("rows %q, want 0,1,100 committed after CommitEvery", rows())
		}
		time.Sleep(time.Millisecond)
	}
	w.Flush() // the writer's lock: the commit's Ended has returned
	if fmt.Sprint(r.ended) != "[true]" {
		t.Fatalf("ended %v, want [true]", r.ended)
	}

	bad := &recorder{fail: errors.New("disk full")}
	if err := w.Do(ctx, func(ctx context.Context, tx *sql.Tx) error {
		w.Enlist(bad)
		_, err := tx.ExecContext(ctx, `INSERT INTO n (k) VALUES (2)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	if rows() != "0,1,100" || fmt.Sprint(bad.ended) != "[false]" {
		t.Fatalf("after a failed BeforeCommit: rows %q, ended %v; want 0,1,100 and [false]", rows(), bad.ended)
	}
}
