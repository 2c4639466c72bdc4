package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Stores are one process's state backends: the embedded SQLite database,
// always, and the Redis/Valkey client when [store] url names one. A command
// opens them once (Open) and passes them down; no component opens its own.
//
// A state kind (bans, failure counters, send-limit counters, ...) is a small
// interface in the package that uses it, with a SQLite implementation over
// DB (its own tables, created on open) and, where several servers must
// share it, a Redis implementation over Redis (keys under Redis.Key), and a
// constructor taking *Stores that picks them. The Redis one falls back to
// local state while Redis.Health says Redis is unreachable (Try), and
// writes what it did meanwhile to Redis when it returns; see
// docs/ARCHITECTURE.md.
type Stores struct {
	DB    *sql.DB
	Redis *Redis // nil without [store] url
}

// Open opens the database in dataDir and, when url is not empty, the Redis
// client. Redis being unreachable is logged (without the URL's password) and
// is not an error: the state kinds use their local fallback until it
// returns. A url that is not redis://, rediss:// or unix:// is.
func Open(ctx context.Context, dataDir, url string, log *slog.Logger) (*Stores, error) {
	if url != "" && !strings.HasPrefix(url, "redis://") && !strings.HasPrefix(url, "rediss://") && !strings.HasPrefix(url, "unix://") {
		return nil, fmt.Errorf("store: [store] url %q: want empty (the embedded SQLite database) or redis://host:port/db, rediss://... or unix:///path", redactURL(url))
	}
	db, err := OpenSQLite(ctx, dataDir)
	if err != nil {
		return nil, err
	}
	s := &Stores{DB: db}
	if url != "" {
		r, err := OpenRedis(ctx, url, log)
		if r == nil {
			db.Close()
			return nil, err
		}
		s.Redis = r
	}
	return s, nil
}

// Shared reports whether a Redis/Valkey store is configured.
func (s *Stores) Shared() bool { return s.Redis != nil }

// Close closes the Redis client and the database.
func (s *Stores) Close() error {
	var errs []error
	if s.Redis != nil {
		errs = append(errs, s.Redis.Close())
	}
	SharedWriter(s.DB).Flush() // the last counts and observations
	errs = append(errs, s.DB.Close())
	return errors.Join(errs...)
}
