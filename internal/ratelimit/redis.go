package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relayguard/relayguard/internal/store"
)

// RedisStore keeps counters in Redis or Valkey, so that a limit holds across
// a pool of servers sharing it. It uses the process's one client; keys are
// under the shared prefix, in "rl:".
type RedisStore struct{ r *store.Redis }

// NewRedisStore returns the counters kept in r.
func NewRedisStore(r *store.Redis) *RedisStore { return &RedisStore{r: r} }

// Add implements Store: INCRBY on a key per window, which expires with it.
func (s *RedisStore) Add(ctx context.Context, key string, start time.Time, window time.Duration, n int64) (int64, error) {
	k := s.r.Key("rl:" + key + ":" + strconv.FormatInt(start.Unix(), 10))
	var incr *redis.IntCmd
	_, err := s.r.C.TxPipelined(ctx, func(p redis.Pipeliner) error {
		incr = p.IncrBy(ctx, k, n)
		p.ExpireAt(ctx, k, start.Add(window+time.Minute))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ratelimit: counter %q: %w", key, err)
	}
	return incr.Val(), nil
}

func (s *RedisStore) seenKey(user string) string { return s.r.Key("rl:seen:" + user) }

// Seen implements Store.
func (s *RedisStore) Seen(ctx context.Context, user, rcpt string) (bool, error) {
	ok, err := s.r.C.SIsMember(ctx, s.seenKey(user), rcpt).Result()
	if err != nil {
		return false, fmt.Errorf("ratelimit: seen %s -> %s: %w", user, rcpt, err)
	}
	return ok, nil
}

// MarkSeen implements Store.
func (s *RedisStore) MarkSeen(ctx context.Context, user, rcpt string, _ time.Time) error {
	if err := s.r.C.SAdd(ctx, s.seenKey(user), rcpt).Err(); err != nil {
		return fmt.Errorf("ratelimit: mark seen %s -> %s: %w", user, rcpt, err)
	}
	return nil
}
