// Package store holds relayguard's state stores: the embedded SQLite
// database (the default, one server) and Redis/Valkey (shared by several
// servers). Each package owns its own tables and creates them with
// CREATE TABLE IF NOT EXISTS on open.
package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"weak"

	_ "modernc.org/sqlite" // pure-Go SQLite driver
)

// DBFile is the database file name inside the data directory.
const DBFile = "relayguard.db"

// OpenSQLite opens (creating if needed) the database in dataDir, in WAL mode
// with a busy timeout so that the CLI and a running server can share it.
func OpenSQLite(ctx context.Context, dataDir string) (*sql.DB, error) {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("store: data dir %s: %w", dataDir, err)
	}
	path := filepath.Join(dataDir, DBFile)
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// Connections kept open between bursts: each new one runs the pragmas
	// above and prepares again the statements the state kinds prepared
	// (database/sql keeps 2 idle by default; a milter or policy service
	// serves tens of sessions at once).
	db.SetMaxIdleConns(16)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return db, nil
}

// writeLocks holds one lock per database opened in this process (see
// WriteLock); weak keys, so a closed and dropped database is not kept.
var writeLocks sync.Map // weak.Pointer[sql.DB] -> *sync.Mutex

// WriteLock returns the lock that serializes this process's frequent
// writes to db (send-limit counters, the accounts' observations). SQLite
// lets one connection write at a time; a statement that finds the
// database locked waits in SQLite's busy handler, which sleeps 1, 2, 5,
// 10 … 100 ms between tries, so concurrent writers of one process queued
// there cost each message milliseconds (bench/milter: the milter's
// per-message cost fell by half with the writes queued on this lock
// instead). Writers in other processes still meet the busy handler.
func WriteLock(db *sql.DB) *sync.Mutex {
	k := weak.Make(db)
	if m, ok := writeLocks.Load(k); ok {
		return m.(*sync.Mutex)
	}
	m, _ := writeLocks.LoadOrStore(k, new(sync.Mutex))
	return m.(*sync.Mutex)
}
