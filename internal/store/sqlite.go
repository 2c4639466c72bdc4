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
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return db, nil
}
