package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	neturl "net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/redact"
)

// Redis is the state shared by several servers in Redis or Valkey: bans
// (a hash, announced on a pub/sub channel), ban history for escalation,
// failure counters (sorted sets) and rate-limit counters (INCR with expiry).
//
// Keys (all under Prefix, default "relayguard:"):
//
//	bans            hash prefix -> JSON ban
//	banhist         hash prefix -> times banned
//	epoch           random token written once; a new token means the data set was lost
//	                (or rolled back: see RotateEpoch)
//	seq             change counter, INCR in the same transaction as every ban change:
//	                lower than a server saw before means Redis rolled back
//	pendingdone     hash database id -> how many rounds of its pending changes were written
//	fail:IP         sorted set of failure times of one address
//	att:PREFIX      sorted set of failing addresses of one prefix, by last time
//	lim:KEY:WINDOW  fixed-window counter
//	channel "bans"  "add PREFIX ORIGIN JSON" / "del PREFIX ORIGIN" / "sync - ORIGIN" (BanMessage)
//
// One Redis is opened per process (by Open) and shared by every state kind;
// Health tells them all when it is unreachable.
type Redis struct {
	C      *redis.Client
	Prefix string
	Health *Health
}

// OpenRedis connects to a redis://, rediss:// or unix:// URL (database and
// password in the URL, as go-redis parses them) and checks the connection.
// A URL that does not parse is an error naming it with its password
// redacted. A Redis that does not answer is not: the returned *Redis is
// usable (go-redis reconnects) and the error says why it is not reachable
// now, so that a server starting while Redis is down keeps its local state
// and resynchronises when Redis returns. log (may be nil) gets the Health
// lines.
func OpenRedis(ctx context.Context, url string, log *slog.Logger) (*Redis, error) {
	opt, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	opt.DialTimeout = 2 * time.Second
	opt.ReadTimeout = 2 * time.Second
	opt.WriteTimeout = 2 * time.Second
	opt.MaxRetries = 1
	// One dial per attempt: Health leaves Redis alone after a failure, so
	// go-redis's own redials (5, 100ms apart) would only hold up the SMTP
	// command or log line that found Redis gone.
	opt.DialerRetries = 1
	if log != nil {
		redis.SetLogger(redisLogger{log: log, secret: opt.Password})
	}
	r := &Redis{C: redis.NewClient(opt), Prefix: "relayguard:", Health: &Health{Log: log}}
	if err := r.C.Ping(ctx).Err(); err != nil {
		err = fmt.Errorf("store: redis %s: %w", opt.Addr, redactErr(err, url))
		r.Health.Failed(err)
		return r, err
	}
	return r, nil
}

// ParseURL reads a [store] url as OpenRedis does (go-redis's parser: the
// database number, the password, the options in the query), so that
// `config check` refuses every URL serve would refuse. The error names the
// URL with its password redacted.
func ParseURL(url string) (*redis.Options, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("store: [store] url %q: %w", redactURL(url), redactErr(err, url))
	}
	return opt, nil
}

// redisLogger takes go-redis's own messages (a pool that cannot dial, ...)
// off stderr into the process's log at debug level, password redacted: the
// Health lines say what matters, once an outage. go-redis has one logger
// per process; every relayguard process has one Redis client.
type redisLogger struct {
	log    *slog.Logger
	secret string
}

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if l.secret != "" {
		msg = strings.ReplaceAll(msg, l.secret, "xxxxx")
	}
	l.log.DebugContext(ctx, "store: go-redis: "+msg)
}

// redactErr replaces the password of url, should it appear in err, by
// "xxxxx" (go-redis does not put it in its errors today; this keeps it so).
func redactErr(err error, url string) error {
	u, perr := neturl.Parse(url)
	if perr != nil || u.User == nil {
		return err
	}
	pw, ok := u.User.Password()
	if !ok || pw == "" || !strings.Contains(err.Error(), pw) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), pw, "xxxxx"))
}

// redactURL hides the password of a redis:// URL, and the values of its
// query, for error messages (redact.URL).
func redactURL(s string) string { return redact.URL(s) }

// Close closes the client.
func (r *Redis) Close() error { return r.C.Close() }

func (r *Redis) k(s string) string { return r.Prefix + s }

// Key returns the Redis key of name under the shared prefix: every state
// kind keeps its keys under Key("kind:...").
func (r *Redis) Key(name string) string { return r.k(name) }

type redisBan struct {
	Prefix  string `json:"prefix"`
	Until   int64  `json:"until,omitempty"` // unix nanoseconds; 0 permanent
	Reason  string `json:"reason"`
	Source  string `json:"source"`
	Created int64  `json:"created"`
	Count   int    `json:"count"`
}

func nano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func unnano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Epoch returns the data set's token, creating it if missing, and the
// change counter (seq: raised by one with every ban change, 0 when
// missing). A token that differs from the one seen before means Redis lost
// its data (restarted without persistence) and every server should push
// its bans back; the same token with a counter lower than one seen before
// means Redis came back from an older snapshot (RDB, a backup, a lagging
// replica promoted) and lost the changes made since.
func (r *Redis) Epoch(ctx context.Context) (string, int64, error) {
	b := make([]byte, 8)
	rand.Read(b)
	var get *redis.SliceCmd
	_, err := r.C.Pipelined(ctx, func(pl redis.Pipeliner) error {
		pl.SetNX(ctx, r.k("epoch"), hex.EncodeToString(b), 0)
		get = pl.MGet(ctx, r.k("epoch"), r.k("seq"))
		return nil
	})
	if err != nil {
		return "", 0, fmt.Errorf("store: redis epoch: %w", err)
	}
	v := get.Val()
	e, _ := v[0].(string)
	if e == "" {
		return "", 0, fmt.Errorf("store: redis epoch: missing after SETNX")
	}
	var seq int64
	if s, ok := v[1].(string); ok {
		if seq, err = strconv.ParseInt(s, 10, 64); err != nil {
			return "", 0, fmt.Errorf("store: redis change counter %q: %w", s, err)
		}
	}
	return e, seq, nil
}

// RotateEpoch replaces the epoch token old by a new one (unless another
// server did already) and returns the token now in place: the servers
// treat it as a lost data set and push their bans back. Used when Redis
// rolled back (see Epoch), so that every server, not only the one that
// noticed, writes back the bans it made since the snapshot.
func (r *Redis) RotateEpoch(ctx context.Context, old string) (string, error) {
	b := make([]byte, 8)
	rand.Read(b)
	e, err := r.C.Eval(ctx, `local e = redis.call('GET', KEYS[1])
if e == ARGV[1] or not e then redis.call('SET', KEYS[1], ARGV[2]); return ARGV[2] end
return e`, []string{r.k("epoch")}, old, hex.EncodeToString(b)).Text()
	if err != nil {
		return "", fmt.Errorf("store: redis rotate epoch: %w", err)
	}
	return e, nil
}

// PutBan stores a ban, raises its history count, and announces it (with
// no origin: every subscriber applies it).
func (r *Redis) PutBan(ctx context.Context, b ban.Ban) error {
	_, err := r.PutBanFrom(ctx, b, "")
	return err
}

// PutBanFrom is PutBan announcing the ban as made by origin (a subscriber
// with that origin skips it: it has the ban already). The message carries
// the ban, so that the other servers apply it without reading the hash.
// One round trip: the ban, its announcement, the history and the change
// counter in one MULTI; it returns the counter's new value (see Epoch).
func (r *Redis) PutBanFrom(ctx context.Context, b ban.Ban, origin string) (int64, error) {
	js := encodeBan(b)
	p := b.Prefix.String()
	var seq *redis.IntCmd
	_, err := r.C.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		pl.HSet(ctx, r.k("bans"), p, js)
		seq = pl.Incr(ctx, r.k("seq"))
		pl.Publish(ctx, r.k("bans"), "add "+p+" "+originWord(origin)+" "+js)
		r.raiseHistory(ctx, pl, b)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: redis put ban %s: %w", p, err)
	}
	return seq.Val(), nil
}

// raiseHistory queues history(p) = max(history(p), b.Count).
func (r *Redis) raiseHistory(ctx context.Context, pl redis.Pipeliner, b ban.Ban) {
	pl.Eval(ctx, `local c = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > c then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0`, []string{r.k("banhist")}, b.Prefix.String(), b.Count)
}

// pushChunk is how many bans PutBans writes per round trip.
const pushChunk = 1000

// PutBans stores bans (with their history) in pipelined round trips
// without announcing each, then announces one "sync" (BanMessage.Resync):
// the subscribers read the whole list again. Used to push a server's bans
// back into a Redis that lost its data set. The change counter is raised
// once per round trip; it returns its last value.
func (r *Redis) PutBans(ctx context.Context, bans []ban.Ban, origin string) (int64, error) {
	var last int64
	for len(bans) > 0 {
		n := min(len(bans), pushChunk)
		var seq *redis.IntCmd
		_, err := r.C.Pipelined(ctx, func(pl redis.Pipeliner) error {
			for _, b := range bans[:n] {
				pl.HSet(ctx, r.k("bans"), b.Prefix.String(), encodeBan(b))
				r.raiseHistory(ctx, pl, b)
			}
			seq = pl.Incr(ctx, r.k("seq"))
			return nil
		})
		if err != nil {
			return last, fmt.Errorf("store: redis put %d bans: %w", len(bans), err)
		}
		last = seq.Val()
		bans = bans[n:]
	}
	if err := r.C.Publish(ctx, r.k("bans"), "sync - "+originWord(origin)).Err(); err != nil {
		return last, fmt.Errorf("store: redis announce bans pushed: %w", err)
	}
	return last, nil
}

// PendingRounds returns how many rounds of pending changes (changes a
// server made while Redis was unreachable) the server database db wrote
// here (0 when none): a database restored from a backup holds rounds
// already written, which must not be replayed.
func (r *Redis) PendingRounds(ctx context.Context, db string) (int64, error) {
	n, err := r.C.HGet(ctx, r.k("pendingdone"), db).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: redis pending rounds of %s: %w", db, err)
	}
	return n, nil
}

// SetPendingRounds records that database db wrote n rounds.
func (r *Redis) SetPendingRounds(ctx context.Context, db string, n int64) error {
	if err := r.C.HSet(ctx, r.k("pendingdone"), db, n).Err(); err != nil {
		return fmt.Errorf("store: redis pending rounds of %s: %w", db, err)
	}
	return nil
}

func encodeBan(b ban.Ban) string {
	js, _ := json.Marshal(redisBan{b.Prefix.String(), nano(b.Until), b.Reason, b.Source, nano(b.Created), b.Count})
	return string(js)
}

// DeleteBan removes a ban and announces it.
func (r *Redis) DeleteBan(ctx context.Context, p netip.Prefix) error {
	_, err := r.DeleteBanFrom(ctx, p, "")
	return err
}

// DeleteBanFrom is DeleteBan announcing the change as made by origin; it
// returns the change counter's new value (see Epoch).
func (r *Redis) DeleteBanFrom(ctx context.Context, p netip.Prefix, origin string) (int64, error) {
	var seq *redis.IntCmd
	_, err := r.C.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		pl.HDel(ctx, r.k("bans"), p.String())
		seq = pl.Incr(ctx, r.k("seq"))
		pl.Publish(ctx, r.k("bans"), "del "+p.String()+" "+originWord(origin))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: redis delete ban %s: %w", p, err)
	}
	return seq.Val(), nil
}

func originWord(o string) string {
	if o == "" || strings.ContainsAny(o, " ") {
		return "-"
	}
	return o
}

// BanMessage is one announcement on the bans channel.
type BanMessage struct {
	Resync bool // "sync": bans were written without announcements; read the whole list
	Delete bool
	Prefix netip.Prefix
	Origin string  // "" when not said
	Ban    ban.Ban // the ban added (Delete false)
}

// ParseBanMessage reads an announcement of PutBanFrom or DeleteBanFrom.
// A message without the ban (from an older relayguard: "add PREFIX") is an
// error: the subscriber must then read the hash (a full resynchronisation).
func ParseBanMessage(msg string) (BanMessage, error) {
	op, rest, _ := strings.Cut(msg, " ")
	ps, rest, _ := strings.Cut(rest, " ")
	origin, js, _ := strings.Cut(rest, " ")
	var m BanMessage
	if origin != "-" {
		m.Origin = origin
	}
	if op == "sync" {
		m.Resync = true
		return m, nil
	}
	var err error
	if m.Prefix, err = netip.ParsePrefix(ps); err != nil {
		return m, fmt.Errorf("store: ban announcement %q: %w", msg, err)
	}
	switch op {
	case "del":
		m.Delete = true
		return m, nil
	case "add":
		if js == "" {
			return m, fmt.Errorf("store: ban announcement %q carries no ban", msg)
		}
		b, err := decodeBan(js)
		if err != nil {
			return m, fmt.Errorf("store: ban announcement of %s: %w", ps, err)
		}
		m.Ban = b
		return m, nil
	}
	return m, fmt.Errorf("store: ban announcement %q: unknown operation", msg)
}

func decodeBan(js string) (ban.Ban, error) {
	var rb redisBan
	if err := json.Unmarshal([]byte(js), &rb); err != nil {
		return ban.Ban{}, err
	}
	p, err := netip.ParsePrefix(rb.Prefix)
	if err != nil {
		return ban.Ban{}, fmt.Errorf("prefix %q: %w", rb.Prefix, err)
	}
	return ban.Ban{Prefix: p, Until: unnano(rb.Until), Reason: rb.Reason, Source: rb.Source, Created: unnano(rb.Created), Count: rb.Count}, nil
}

// ListBans returns every stored ban. An entry that does not decode (an
// operator's hand-made HSET with a bare address, a value another program
// wrote) is skipped and named in the log: failing the whole list made
// every server take Redis for unreachable and stop sharing bans.
func (r *Redis) ListBans(ctx context.Context) ([]ban.Ban, error) {
	m, err := r.C.HGetAll(ctx, r.k("bans")).Result()
	if err != nil {
		return nil, fmt.Errorf("store: redis list bans: %w", err)
	}
	out := make([]ban.Ban, 0, len(m))
	for k, v := range m {
		b, err := decodeBan(v)
		if err != nil {
			if r.Health != nil && r.Health.Log != nil {
				r.Health.Log.Warn("store: an entry of the shared ban list does not decode; skipped (delete it with HDEL)",
					"key", r.k("bans"), "field", k, "err", err)
			}
			continue
		}
		out = append(out, b)
	}
	return out, nil
}

// BanCount returns how many times p was banned.
func (r *Redis) BanCount(ctx context.Context, p netip.Prefix) (int, error) {
	n, err := r.C.HGet(ctx, r.k("banhist"), p.String()).Int()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: redis ban history %s: %w", p, err)
	}
	return n, nil
}

// Subscribe calls f for every ban announcement until ctx is done. go-redis
// reconnects the subscription by itself after Redis comes back.
func (r *Redis) Subscribe(ctx context.Context, f func(msg string)) {
	r.Listen(ctx, r.k("bans"), f)
}

// SubscribeBans is Subscribe that also calls subscribed each time the
// subscription is (re)established: messages published while it was not
// were lost, so the subscriber must resynchronise then.
func (r *Redis) SubscribeBans(ctx context.Context, f func(msg string), subscribed func()) {
	r.ListenSync(ctx, r.k("bans"), f, subscribed)
}

// Listen calls f with every message published on channel until ctx is
// done (the one subscription loop of the bans' and the accounts' shared
// state). go-redis resubscribes by itself after Redis comes back.
func (r *Redis) Listen(ctx context.Context, channel string, f func(msg string)) {
	r.ListenSync(ctx, channel, f, nil)
}

// listenIdle is how long a subscription may stay silent before it is
// pinged: a connection that died without a reset is found within it.
const listenIdle = 15 * time.Second

// ListenSync is Listen that calls subscribed (when not nil) whenever the
// subscription is confirmed: at first and after every reconnection (pub/sub
// delivers at most once; what was published meanwhile is gone). It reads
// the subscription itself rather than through go-redis's Channel, which
// hides the confirmations.
func (r *Redis) ListenSync(ctx context.Context, channel string, f func(msg string), subscribed func()) {
	ps := r.C.Subscribe(ctx, channel)
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	defer ps.Close()
	failures := 0
	for ctx.Err() == nil {
		m, err := ps.ReceiveTimeout(ctx, listenIdle)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				_ = ps.Ping(ctx) // a dead connection fails here and is redialled
				continue
			}
			// Redis away: go-redis redials on the next Receive.
			failures++
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(time.Duration(failures)*50*time.Millisecond, time.Second)):
			}
			continue
		}
		failures = 0
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && subscribed != nil {
				subscribed()
			}
		case *redis.Message:
			f(m.Payload)
		}
	}
}

// AddFailure records a failure of ip at t and counts its failures within
// window (a sorted set per address, trimmed on every write).
func (r *Redis) AddFailure(ctx context.Context, ip netip.Addr, t time.Time, window time.Duration) (int, error) {
	key := r.k("fail:" + ip.String())
	var card *redis.IntCmd
	_, err := r.C.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		pl.ZAdd(ctx, key, redis.Z{Score: float64(t.UnixMilli()), Member: strconv.FormatInt(t.UnixNano(), 36) + randSuffix()})
		pl.ZRemRangeByScore(ctx, key, "-inf", strconv.FormatInt(t.Add(-window).UnixMilli(), 10))
		card = pl.ZCard(ctx, key)
		pl.PExpire(ctx, key, window)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: redis failure counter %s: %w", ip, err)
	}
	return int(card.Val()), nil
}

func randSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// AddAttacker records ip as failing inside p at t and counts the distinct
// addresses of p that failed within window.
func (r *Redis) AddAttacker(ctx context.Context, p netip.Prefix, ip netip.Addr, t time.Time, window time.Duration) (int, error) {
	key := r.k("att:" + p.String())
	var card *redis.IntCmd
	_, err := r.C.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		pl.ZAdd(ctx, key, redis.Z{Score: float64(t.UnixMilli()), Member: ip.String()})
		pl.ZRemRangeByScore(ctx, key, "-inf", strconv.FormatInt(t.Add(-window).UnixMilli(), 10))
		card = pl.ZCard(ctx, key)
		pl.PExpire(ctx, key, window)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: redis subnet counter %s: %w", p, err)
	}
	return int(card.Val()), nil
}

// Forget drops the failures of ip.
func (r *Redis) Forget(ctx context.Context, ip netip.Addr) error {
	return r.C.Del(ctx, r.k("fail:"+ip.String())).Err()
}

// Add adds delta to key's bucket of at (buckets of period) and returns its
// count and the previous bucket's, in one round trip (limits.Counter). A
// bucket lives two periods, so that it is still there as the previous one.
func (r *Redis) Add(ctx context.Context, key string, period time.Duration, at time.Time, delta int64) (int64, int64, error) {
	n := at.UnixNano() / int64(period)
	k := r.k(fmt.Sprintf("lim:%s:%d", key, n))
	var cur *redis.IntCmd
	var prev *redis.StringCmd
	_, err := r.C.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		cur = pl.IncrBy(ctx, k, delta)
		pl.PExpire(ctx, k, 2*period)
		prev = pl.Get(ctx, r.k(fmt.Sprintf("lim:%s:%d", key, n-1)))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, 0, fmt.Errorf("store: redis counter %s: %w", key, err)
	}
	if err := cur.Err(); err != nil {
		return 0, 0, fmt.Errorf("store: redis counter %s: %w", key, err)
	}
	p, err := prev.Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, 0, fmt.Errorf("store: redis counter %s: %w", key, err)
	}
	return cur.Val(), p, nil
}
