package guard

// table holds fixed-size records of uint32 words keyed by 16 bytes (an
// address or a masked prefix, netip.Addr.As16), at most max of them. Each
// record has a level (how many failures, or failing addresses, it holds: 1
// and up) and sits in its level's list, most recently touched first.
//
// When the table is full, the record to drop is chosen so that a flood of
// fresh addresses cannot make the guard forget an attacker cheaply: first a
// record whose last entry is outside its window (forgetting it loses
// nothing), otherwise the least recently touched record of the lowest
// level. An address with four recent failures is dropped only once every
// other tracked address has four too: to push a real attacker out, a flood
// must itself come close to being banned, address by address.
//
// The records live in flat slices (no pointer per record, nothing for the
// garbage collector to scan): 16 bytes of key, 12 of links, 4 per word, and
// the index's slot. Written here rather than taken from a library because
// no cache package keeps this eviction order (lowest level first, then least
// recently used) with fixed-size records.
type table struct {
	width  int // words per record
	stride int // words per entry: the entry's time is its last word
	max    int // records at most; 0: no bound

	index map[[16]byte]int32
	keys  [][16]byte
	nodes []node
	words []uint32
	lists []list // by level; lists[0] unused
	free  []int32
}

type node struct {
	prev, next int32 // in the level's list; -1: none
	level      int32 // 0: free
}

type list struct{ first, last int32 } // most, least recently touched

func newTable(width, stride, max int) *table {
	t := &table{width: width, stride: stride, max: max, index: map[[16]byte]int32{}}
	t.lists = make([]list, width/stride+1)
	for i := range t.lists {
		t.lists[i] = list{-1, -1}
	}
	return t
}

func (t *table) len() int { return len(t.index) }

// rec returns the words of record r.
func (t *table) rec(r int32) []uint32 {
	return t.words[int(r)*t.width : (int(r)+1)*t.width : (int(r)+1)*t.width]
}

// last is the time of record r's newest entry (entries are kept oldest
// first).
func (t *table) last(r int32) uint32 {
	return t.words[int(r)*t.width+int(t.nodes[r].level)*t.stride-1]
}

// get returns the record of k, if any.
func (t *table) get(k [16]byte) (int32, bool) {
	r, ok := t.index[k]
	return r, ok
}

// add makes a record for k (level 0 until set), dropping one first when
// the table is full (see table); it reports whether the dropped record
// still had an entry newer than cut (a loss: the caller notes it).
func (t *table) add(k [16]byte, cut int64) (r int32, lost bool) {
	if t.max > 0 && len(t.index) >= t.max {
		lost = t.evict(cut)
	}
	if n := len(t.free); n > 0 {
		r = t.free[n-1]
		t.free = t.free[:n-1]
		t.keys[r] = k
	} else {
		r = int32(len(t.nodes))
		t.keys = append(t.keys, k)
		t.nodes = append(t.nodes, node{})
		t.words = append(t.words, make([]uint32, t.width)...)
	}
	t.nodes[r] = node{prev: -1, next: -1}
	t.index[k] = r
	return r, lost
}

// evict drops one record: the least recently touched of the lowest level
// whose newest entry is not after cut, or else the least recently touched
// of the lowest level. It reports whether the record dropped was live.
func (t *table) evict(cut int64) bool {
	for l := 1; l < len(t.lists); l++ {
		if r := t.lists[l].last; r >= 0 && int64(t.last(r)) <= cut {
			t.drop(r)
			return false
		}
	}
	for l := 1; l < len(t.lists); l++ {
		if r := t.lists[l].last; r >= 0 {
			t.drop(r)
			return true
		}
	}
	return false
}

// set gives record r its level after a change (0 drops it) and makes it
// the most recently touched of that level.
func (t *table) set(r int32, level int) {
	if level == 0 {
		t.drop(r)
		return
	}
	t.unlink(r)
	n := &t.nodes[r]
	n.level = int32(level)
	l := &t.lists[level]
	n.prev, n.next = -1, l.first
	if l.first >= 0 {
		t.nodes[l.first].prev = r
	} else {
		l.last = r
	}
	l.first = r
}

func (t *table) unlink(r int32) {
	n := &t.nodes[r]
	if n.level == 0 {
		return
	}
	l := &t.lists[n.level]
	if n.prev >= 0 {
		t.nodes[n.prev].next = n.next
	} else {
		l.first = n.next
	}
	if n.next >= 0 {
		t.nodes[n.next].prev = n.prev
	} else {
		l.last = n.prev
	}
	n.prev, n.next, n.level = -1, -1, 0
}

// drop forgets record r.
func (t *table) drop(r int32) {
	t.unlink(r)
	delete(t.index, t.keys[r])
	t.free = append(t.free, r)
}

// sweep drops the records whose newest entry is not after cut, from the
// least recently touched end of each level (a record touched out of order
// may wait for the next sweep).
func (t *table) sweep(cut int64) {
	for l := 1; l < len(t.lists); l++ {
		for r := t.lists[l].last; r >= 0 && int64(t.last(r)) <= cut; r = t.lists[l].last {
			t.drop(r)
		}
	}
	// A table that shrank a lot gives its memory back.
	if len(t.index) == 0 && len(t.nodes) > 1024 {
		*t = *newTable(t.width, t.stride, t.max)
	}
}

// shift moves every entry's time down by d (a new time base); times before
// it become 0, which every window has left behind.
func (t *table) shift(d uint32) {
	for r := range t.nodes {
		lv := int(t.nodes[r].level)
		w := t.rec(int32(r))
		for i := range lv {
			p := &w[(i+1)*t.stride-1]
			*p = max(*p, d) - d
		}
	}
}
