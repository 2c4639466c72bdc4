package dnsbl

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The answer cache holds one entry per target (a client address, or a
// domain) with a slot per zone: a busy MX asks every zone about the same
// client, so the key, the LRU links and the map slot are paid once per
// client instead of once per zone. An entry holds its key (16 bytes), its
// links (8) and 6 bytes per zone, plus its map slot: with 10 zones about
// 140 bytes a client, growth slack included (BenchmarkCacheMemory,
// docs/benchmarks/dnsbl.md).
//
// Eviction is least-recently-used and O(1): each shard keeps its entries
// in flat arrays linked into a list by index; a full shard reuses its
// oldest entry. The cache is split into shards, each with its own lock,
// so that concurrent checks seldom wait for each other.
const cacheShards = 32

// cacheKey is a target: an IP address as 16 bytes, or a 128-bit keyed
// hash of a domain name (a collision needs 2^64 names; the key is secret,
// so a client cannot choose names that collide).
type cacheKey [16]byte

type cache struct {
	nz       int       // zones per entry
	perShard int       // entries per shard at most
	base     time.Time // expiry times are whole seconds after base
	shards   [cacheShards]cacheShard
	seed     maphash.Seed
	seed2    maphash.Seed // with seed, the two halves of a domain's key
	sets     *answerSets
	count    atomic.Int64
	evicted  func() // called once per eviction (metrics)
	added    func() // called once per new entry (metrics)
}

type cacheShard struct {
	mu    sync.Mutex
	index map[cacheKey]int32
	keys  []cacheKey
	exp   []uint32 // entry i, zone z at i*nz+z: seconds after base; 0: none
	set   []uint16 // answer set of the same slot
	prev  []int32
	next  []int32
	head  int32 // most recently used; -1 if empty
	tail  int32 // least recently used
}

func newCache(zones, size int, base time.Time, sets *answerSets) *cache {
	c := &cache{nz: max(zones, 1), perShard: max(1, (size+cacheShards-1)/cacheShards), base: base,
		seed: maphash.MakeSeed(), seed2: maphash.MakeSeed(), sets: sets, evicted: func() {}, added: func() {}}
	for i := range c.shards {
		c.shards[i].index = map[cacheKey]int32{}
		c.shards[i].head, c.shards[i].tail = -1, -1
	}
	return c
}

// capacity is the number of targets the cache holds at most.
func (c *cache) capacity() int { return c.perShard * cacheShards }

func (c *cache) shard(k cacheKey) *cacheShard {
	return &c.shards[maphash.Comparable(c.seed, k)%cacheShards]
}

// seconds converts t into the cache's expiry clock.
func (c *cache) seconds(t time.Time) uint32 {
	d := t.Sub(c.base)
	if d < 0 {
		return 0
	}
	return uint32(d / time.Second)
}

// get returns zone z's answers for k if they have not expired at now.
func (c *cache) get(k cacheKey, z int, now time.Time) ([]netip.Addr, bool) {
	if z >= c.nz {
		return nil, false // a zone added after the cache was made
	}
	s := c.shard(k)
	s.mu.Lock()
	i, ok := s.index[k]
	if !ok {
		s.mu.Unlock()
		return nil, false
	}
	slot := int(i)*c.nz + z
	e, id := s.exp[slot], s.set[slot]
	if e == 0 || e <= c.seconds(now) {
		s.mu.Unlock()
		return nil, false
	}
	s.toFront(i)
	s.mu.Unlock()
	return c.sets.get(id), true
}

// put stores zone z's answers for k until expires. It reports whether a
// target was evicted to make room.
func (c *cache) put(k cacheKey, z int, answers []netip.Addr, expires time.Time) (evicted bool) {
	if z >= c.nz {
		return false
	}
	id, ok := c.sets.id(answers)
	if !ok {
		return false
	}
	e := c.seconds(expires)
	if e == 0 {
		return false
	}
	s := c.shard(k)
	s.mu.Lock()
	i, found := s.index[k]
	if !found {
		if len(s.keys) < c.perShard {
			i = int32(len(s.keys))
			s.keys = append(s.keys, k)
			for range c.nz {
				s.exp = append(s.exp, 0)
				s.set = append(s.set, 0)
			}
			s.prev = append(s.prev, -1)
			s.next = append(s.next, -1)
			c.count.Add(1)
			c.added()
		} else {
			// Reuse the least recently used entry (O(1)).
			i = s.tail
			s.unlink(i)
			delete(s.index, s.keys[i])
			clear(s.exp[int(i)*c.nz : int(i+1)*c.nz])
			s.keys[i] = k
			evicted = true
		}
		s.index[k] = i
		s.pushFront(i)
	} else {
		s.toFront(i)
	}
	s.exp[int(i)*c.nz+z], s.set[int(i)*c.nz+z] = e, id
	s.mu.Unlock()
	if evicted {
		c.evicted()
	}
	return evicted
}

func (s *cacheShard) unlink(i int32) {
	p, n := s.prev[i], s.next[i]
	if p >= 0 {
		s.next[p] = n
	} else {
		s.head = n
	}
	if n >= 0 {
		s.prev[n] = p
	} else {
		s.tail = p
	}
	s.prev[i], s.next[i] = -1, -1
}

func (s *cacheShard) pushFront(i int32) {
	s.prev[i], s.next[i] = -1, s.head
	if s.head >= 0 {
		s.prev[s.head] = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
}

func (s *cacheShard) toFront(i int32) {
	if s.head == i {
		return
	}
	s.unlink(i)
	s.pushFront(i)
}

// answerSets interns the distinct answers lists give ({}, {127.0.0.2},
// {127.0.0.2, 127.0.0.4}, ...): there are few, so a cache slot holds a
// 16-bit number instead of a slice.
type answerSets struct {
	mu   sync.RWMutex
	ids  map[string]uint16
	sets [][]netip.Addr // id 0: no answer (NXDOMAIN / NODATA)
}

func newAnswerSets() *answerSets {
	return &answerSets{ids: map[string]uint16{"": 0}, sets: [][]netip.Addr{nil}}
}

// maxAnswerSets bounds the table: a list that answers with ever new
// addresses gets its answers asked again instead of cached.
const maxAnswerSets = 4096

func (a *answerSets) id(answers []netip.Addr) (uint16, bool) {
	b := make([]byte, 0, 4*len(answers))
	for _, x := range answers {
		v := x.Unmap().As4()
		b = append(b, v[:]...)
	}
	key := string(b)
	a.mu.RLock()
	id, ok := a.ids[key]
	a.mu.RUnlock()
	if ok {
		return id, true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if id, ok := a.ids[key]; ok {
		return id, true
	}
	if len(a.sets) >= maxAnswerSets {
		return 0, false
	}
	id = uint16(len(a.sets))
	a.sets = append(a.sets, append([]netip.Addr(nil), answers...))
	a.ids[key] = id
	return id, true
}

func (a *answerSets) get(id uint16) []netip.Addr {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.sets[id]
}

// ipKey is the cache key of a client address (IPv4-mapped addresses as
// IPv4).
func ipKey(ip netip.Addr) cacheKey { return ip.Unmap().As16() }

// domainKey is the cache key of a domain name (lower case, no trailing dot).
func (c *cache) domainKey(d string) cacheKey {
	var k cacheKey
	h1 := maphash.String(c.seed, d)
	h2 := maphash.String(c.seed2, d)
	for i := range 8 {
		k[i] = byte(h1 >> (8 * i))
		k[8+i] = byte(h2 >> (8 * i))
	}
	return k
}
