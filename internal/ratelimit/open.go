package ratelimit

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/relayguard/relayguard/internal/queue"
)

// OpenStore returns the store named by [store] url: empty for the embedded
// SQLite database db, redis:// or rediss:// for Redis/Valkey.
func OpenStore(ctx context.Context, url string, db *sql.DB) (Store, error) {
	switch {
	case url == "":
		if db == nil {
			return nil, fmt.Errorf("ratelimit: no SQLite database")
		}
		return NewSQLStore(ctx, db)
	case strings.HasPrefix(url, "redis://"), strings.HasPrefix(url, "rediss://"), strings.HasPrefix(url, "unix://"):
		return NewRedisStore(ctx, url)
	}
	return nil, fmt.Errorf("ratelimit: store.url %q: want empty (SQLite) or redis://host:port/db", url)
}

// SpoolHolder holds a user's queued mail in the spool.
type SpoolHolder struct{ Spool *queue.Spool }

// HoldUser implements Holder.
func (h SpoolHolder) HoldUser(_ context.Context, user, reason string) (int, error) {
	ids, err := queue.HoldUser(h.Spool, user, reason)
	return len(ids), err
}
