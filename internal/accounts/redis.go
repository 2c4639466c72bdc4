package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relayguard/relayguard/internal/store"
)

// RedisStore keeps the accounts' state in Redis/Valkey, shared by every
// server of a cluster. Keys (under the store's prefix):
//
//	acct:login:USER       sorted set network -> last login (ms)
//	acct:forgiven:USER    logins before this time (ms) do not count for the spread
//	acct:fail:USER        sorted set address -> last failure (ms)
//	acct:sent:USER:HOUR   messages in that hour
//	acct:out:USER:START   hash total, bad: recipients in a window
//	acct:qid:HOST:USER    sorted set queue id -> time (ms)
//	acct:qidu:HOST:QID    the user a queue id is tied to
//	acct:suspended        hash user -> JSON Suspension
//	channel acct          "suspend USER" / "unsuspend USER"
type RedisStore struct {
	r    *store.Redis
	keep time.Duration
}

// NewRedisStore returns the accounts' state in r, kept for keep.
func NewRedisStore(r *store.Redis, keep time.Duration) *RedisStore {
	if keep <= 0 {
		keep = 30 * 24 * time.Hour
	}
	return &RedisStore{r: r, keep: keep}
}

func (s *RedisStore) k(parts ...string) string {
	k := "acct"
	for _, p := range parts {
		k += ":" + p
	}
	return s.r.Key(k)
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// touch adds member to a sorted set with score t (GT: a later score
// replaces an earlier one, never the reverse), trims what is older than
// keep, and refreshes the key's expiry.
func (s *RedisStore) touch(p redis.Pipeliner, ctx context.Context, k, member string, t time.Time) {
	p.ZAddGT(ctx, k, redis.Z{Score: float64(t.UnixMilli()), Member: member})
	p.ZRemRangeByScore(ctx, k, "-inf", "("+ms(t.Add(-s.keep)))
	p.PExpire(ctx, k, s.keep)
}

// AddLogin implements Store.
func (s *RedisStore) AddLogin(ctx context.Context, user string, network netip.Prefix, t time.Time, window time.Duration) ([]netip.Prefix, error) {
	k := s.k("login", key(user))
	var forgiven *redis.StringCmd
	_, err := s.r.C.TxPipelined(ctx, func(p redis.Pipeliner) error {
		s.touch(p, ctx, k, network.String(), t)
		forgiven = p.Get(ctx, s.k("forgiven", key(user)))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("accounts: redis login of %q: %w", user, err)
	}
	from := t.Add(-window).UnixMilli()
	if f, err := forgiven.Int64(); err == nil && f > from {
		from = f
	}
	nets := s.r.C.ZRangeByScore(ctx, k, &redis.ZRangeBy{Min: strconv.FormatInt(from, 10), Max: "+inf"})
	if err := nets.Err(); err != nil {
		return nil, fmt.Errorf("accounts: redis logins of %q: %w", user, err)
	}
	var out []netip.Prefix
	for _, n := range nets.Val() {
		if p, err := netip.ParsePrefix(n); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}

// Forgive implements Store.
func (s *RedisStore) Forgive(ctx context.Context, user string, t time.Time) error {
	if err := s.r.C.Set(ctx, s.k("forgiven", key(user)), t.UnixMilli(), s.keep).Err(); err != nil {
		return fmt.Errorf("accounts: redis forgiving %q: %w", user, err)
	}
	return nil
}

// KnownNetwork implements Store.
func (s *RedisStore) KnownNetwork(ctx context.Context, user string, network netip.Prefix, since time.Time) (bool, error) {
	v, err := s.r.C.ZScore(ctx, s.k("login", key(user)), network.String()).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("accounts: redis logins of %q: %w", user, err)
	}
	return int64(v) >= since.UnixMilli(), nil
}

// LoggedIn implements Store.
func (s *RedisStore) LoggedIn(ctx context.Context, user string) (bool, error) {
	n, err := s.r.C.Exists(ctx, s.k("login", key(user))).Result()
	if err != nil {
		return false, fmt.Errorf("accounts: redis logins of %q: %w", user, err)
	}
	return n > 0, nil
}

// AddFailure implements Store.
func (s *RedisStore) AddFailure(ctx context.Context, user string, ip netip.Addr, t time.Time, window time.Duration) (int, error) {
	k := s.k("fail", key(user))
	var n *redis.IntCmd
	_, err := s.r.C.TxPipelined(ctx, func(p redis.Pipeliner) error {
		s.touch(p, ctx, k, ip.Unmap().String(), t)
		n = p.ZCount(ctx, k, ms(t.Add(-window)), "+inf")
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("accounts: redis failure of %q: %w", user, err)
	}
	return int(n.Val()), nil
}

// Failures implements Store.
func (s *RedisStore) Failures(ctx context.Context, user string, since time.Time) (int, error) {
	n, err := s.r.C.ZCount(ctx, s.k("fail", key(user)), ms(since), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("accounts: redis failures of %q: %w", user, err)
	}
	return int(n), nil
}

// AddSent implements Store.
func (s *RedisStore) AddSent(ctx context.Context, user string, hour time.Time, n int64) (int64, error) {
	k := s.k("sent", key(user), ms(hour))
	var c *redis.IntCmd
	_, err := s.r.C.TxPipelined(ctx, func(p redis.Pipeliner) error {
		c = p.IncrBy(ctx, k, n)
		p.PExpire(ctx, k, s.keep)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("accounts: redis volume of %q: %w", user, err)
	}
	return c.Val(), nil
}

// PeakHour implements Store: the hourly keys of [from, to) in one MGET.
func (s *RedisStore) PeakHour(ctx context.Context, user string, from, to time.Time) (int64, error) {
	var keys []string
	for h := from.Truncate(time.Hour); h.Before(to); h = h.Add(time.Hour) {
		if !h.Before(from) {
			keys = append(keys, s.k("sent", key(user), ms(h)))
		}
	}
	if len(keys) == 0 {
		return 0, nil
	}
	vals, err := s.r.C.MGet(ctx, keys...).Result()
	if err != nil {
		return 0, fmt.Errorf("accounts: redis volume of %q: %w", user, err)
	}
	var peak int64
	for _, v := range vals {
		if str, ok := v.(string); ok {
			if n, err := strconv.ParseInt(str, 10, 64); err == nil && n > peak {
				peak = n
			}
		}
	}
	return peak, nil
}

// AddOutcome implements Store.
func (s *RedisStore) AddOutcome(ctx context.Context, user string, start time.Time, window time.Duration, bad bool) (int64, int64, error) {
	k := s.k("out", key(user), ms(start))
	var total, nbad *redis.IntCmd
	b := int64(0)
	if bad {
		b = 1
	}
	_, err := s.r.C.TxPipelined(ctx, func(p redis.Pipeliner) error {
		total = p.HIncrBy(ctx, k, "total", 1)
		nbad = p.HIncrBy(ctx, k, "bad", b)
		p.PExpireAt(ctx, k, start.Add(window+time.Minute))
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("accounts: redis recipients of %q: %w", user, err)
	}
	return total.Val(), nbad.Val(), nil
}

// TieQueueID implements Store.
func (s *RedisStore) TieQueueID(ctx context.Context, host, user, qid string, t time.Time) error {
	_, err := s.r.C.TxPipelined(ctx, func(p redis.Pipeliner) error {
		s.touch(p, ctx, s.k("qid", host, key(user)), qid, t)
		p.Set(ctx, s.k("qidu", host, qid), key(user), s.keep)
		return nil
	})
	if err != nil {
		return fmt.Errorf("accounts: redis queue id %s of %q: %w", qid, user, err)
	}
	return nil
}

// QueueUser implements Store.
func (s *RedisStore) QueueUser(ctx context.Context, host, qid string) (string, bool, error) {
	u, err := s.r.C.Get(ctx, s.k("qidu", host, qid)).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("accounts: redis queue id %s: %w", qid, err)
	}
	return u, true, nil
}

// QueueIDs implements Store.
func (s *RedisStore) QueueIDs(ctx context.Context, host, user string, since time.Time) ([]string, error) {
	ids, err := s.r.C.ZRangeByScore(ctx, s.k("qid", host, key(user)), &redis.ZRangeBy{Min: ms(since), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("accounts: redis queue ids of %q: %w", user, err)
	}
	return ids, nil
}

// Suspend implements Store; a new suspension is announced on the channel.
func (s *RedisStore) Suspend(ctx context.Context, sp Suspension) (bool, error) {
	js, _ := json.Marshal(sp)
	ok, err := s.r.C.HSetNX(ctx, s.k("suspended"), key(sp.User), js).Result()
	if err != nil {
		return false, fmt.Errorf("accounts: redis suspending %q: %w", sp.User, err)
	}
	if ok {
		s.r.C.Publish(ctx, s.k(), "suspend "+sp.User)
	}
	return ok, nil
}

// Unsuspend implements Store; it is announced on the channel.
func (s *RedisStore) Unsuspend(ctx context.Context, user string) (Suspension, bool, error) {
	sp, ok, err := s.Suspended(ctx, user)
	if err != nil || !ok {
		return sp, ok, err
	}
	if err := s.r.C.HDel(ctx, s.k("suspended"), key(user)).Err(); err != nil {
		return Suspension{}, false, fmt.Errorf("accounts: redis unsuspending %q: %w", user, err)
	}
	s.r.C.Publish(ctx, s.k(), "unsuspend "+sp.User)
	return sp, true, nil
}

// Suspended implements Store.
func (s *RedisStore) Suspended(ctx context.Context, user string) (Suspension, bool, error) {
	js, err := s.r.C.HGet(ctx, s.k("suspended"), key(user)).Result()
	if errors.Is(err, redis.Nil) {
		return Suspension{}, false, nil
	}
	if err != nil {
		return Suspension{}, false, fmt.Errorf("accounts: redis suspension of %q: %w", user, err)
	}
	var sp Suspension
	if err := json.Unmarshal([]byte(js), &sp); err != nil {
		return Suspension{}, false, fmt.Errorf("accounts: redis suspension of %q: %w", user, err)
	}
	return sp, true, nil
}

// Suspensions implements Store.
func (s *RedisStore) Suspensions(ctx context.Context) ([]Suspension, error) {
	m, err := s.r.C.HGetAll(ctx, s.k("suspended")).Result()
	if err != nil {
		return nil, fmt.Errorf("accounts: redis suspensions: %w", err)
	}
	out := make([]Suspension, 0, len(m))
	for u, js := range m {
		var sp Suspension
		if err := json.Unmarshal([]byte(js), &sp); err != nil {
			return nil, fmt.Errorf("accounts: redis suspension of %q: %w", u, err)
		}
		out = append(out, sp)
	}
	return out, nil
}

// Subscribe calls f with every announcement ("suspend USER", "unsuspend
// USER") until ctx is done.
func (s *RedisStore) Subscribe(ctx context.Context, f func(msg string)) {
	s.r.Listen(ctx, s.k(), f)
}
