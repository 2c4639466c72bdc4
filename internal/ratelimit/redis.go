package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore keeps counters in Redis or Valkey, so that a limit holds across
// a pool of servers sharing it.
type RedisStore struct {
	c      *redis.Client
	prefix string
}

// NewRedisStore connects to url (redis://[user:pass@]host:port/db).
func NewRedisStore(ctx context.Context, url string) (*RedisStore, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: store url %q: %w", url, err)
	}
	c := redis.NewClient(opt)
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("ratelimit: redis %s: %w", opt.Addr, err)
	}
	return &RedisStore{c: c, prefix: "relayguard:rl:"}, nil
}

// Close closes the connection pool.
func (s *RedisStore) Close() error { return s.c.Close() }

// Add implements Store: INCRBY on a key per window, which expires with it.
func (s *RedisStore) Add(ctx context.Context, key string, start time.Time, window time.Duration, n int64) (int64, error) {
	k := s.prefix + key + ":" + strconv.FormatInt(start.Unix(), 10)
	var incr *redis.IntCmd
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		incr = p.IncrBy(ctx, k, n)
		p.ExpireAt(ctx, k, start.Add(window+time.Minute))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ratelimit: counter %q: %w", key, err)
	}
	return incr.Val(), nil
}

func (s *RedisStore) seenKey(user string) string { return s.prefix + "seen:" + user }

// Seen implements Store.
func (s *RedisStore) Seen(ctx context.Context, user, rcpt string) (bool, error) {
	ok, err := s.c.SIsMember(ctx, s.seenKey(user), rcpt).Result()
	if err != nil {
		return false, fmt.Errorf("ratelimit: seen %s -> %s: %w", user, rcpt, err)
	}
	return ok, nil
}

// MarkSeen implements Store.
func (s *RedisStore) MarkSeen(ctx context.Context, user, rcpt string, _ time.Time) error {
	if err := s.c.SAdd(ctx, s.seenKey(user), rcpt).Err(); err != nil {
		return fmt.Errorf("ratelimit: mark seen %s -> %s: %w", user, rcpt, err)
	}
	return nil
}
