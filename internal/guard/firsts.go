package guard

import (
	"hash/maphash"
	"math/bits"
	"net/netip"
)

// firsts holds the first piece of evidence against a key: the one recent
// failure of an address, or the one recent failing address of a prefix
// (the key is the address masked to bits). A key's second piece of
// evidence moves it to a table (Memory), where records are worth more:
// so a flood of one-shot addresses churns only firsts and never pushes out
// an address that failed twice or a prefix with two failing addresses.
//
// An entry is an address and a time, 8 bytes for IPv4 and 20 for IPv6,
// kept in a ring in the order entries were last written (a second failure
// of the same address moves it to the end), plus 5–11 bytes of index (at
// most 3/4 full): a tenth of a table's record, so that firsts holds ten
// times as many.
// When the ring is full the least recently written entry goes (dropped
// expired if its time has passed the window, else lost): a first failure
// is forgotten only once max newer first failures (of other keys of the
// same family and rule) have been written after it.
//
// Keys are compared exactly (the whole masked address): two prefixes never
// share an entry, so nothing is ever counted for a prefix it does not
// belong to. The index is open addressing with linear probing over a hash
// seeded per process, so log content cannot choose collisions.
type firsts struct {
	aw    int       // address words: 1 (IPv4) or 4 (IPv6)
	st    int       // words per entry: the address, then its time
	mask  [4]uint32 // the key of an address: its words and mask
	max   int       // entries in the ring at most
	words []uint32  // the ring, allocated as it fills, up to max entries
	head  int       // oldest slot
	used  int       // slots from head, written or emptied
	live  int       // entries in the index
	index []uint32  // tag and slot+1 of each entry; 0: empty. len a power of 2
	// slotBits are the low bits of an index entry that hold the slot+1.
	slotBits int
	seed     maphash.Seed
}

// maxFirsts bounds a ring (at least 4 bits of tag).
const maxFirsts = 1<<28 - 1

func newFirsts(v6 bool, prefixBits, size int) *firsts {
	size = min(max(size, 1), maxFirsts)
	f := &firsts{aw: 1, max: size, slotBits: bits.Len(uint(size)), seed: maphash.MakeSeed()}
	if v6 {
		f.aw = 4
	}
	f.st = f.aw + 1
	for i := range f.aw {
		keep := min(max(prefixBits-32*i, 0), 32)
		f.mask[4-f.aw+i] = ^uint32(0) << (32 - keep)
	}
	return f
}

// words4 is ip as four big-endian words (an IPv4 address in the last, the
// others 0).
func words4(ip netip.Addr) [4]uint32 {
	var w [4]uint32
	if ip.Is4() {
		a := ip.As4()
		w[3] = uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
		return w
	}
	a := ip.As16()
	for i := range w {
		w[i] = uint32(a[4*i])<<24 | uint32(a[4*i+1])<<16 | uint32(a[4*i+2])<<8 | uint32(a[4*i+3])
	}
	return w
}

func (f *firsts) len() int { return f.live }

// key is the masked address of a (its last aw words).
func (f *firsts) key(a [4]uint32) [4]uint32 {
	for i := range a {
		a[i] &= f.mask[i]
	}
	return a
}

// at returns the address of slot s as four words.
func (f *firsts) at(s int) [4]uint32 {
	var a [4]uint32
	if f.aw == 1 {
		a[3] = f.words[s*f.st]
		return a
	}
	w := f.words[s*f.st : s*f.st+4]
	a[0], a[1], a[2], a[3] = w[0], w[1], w[2], w[3]
	return a
}

func (f *firsts) time(s int) uint32 { return f.words[s*f.st+f.aw] }

func (f *firsts) hash(k [4]uint32) uint64 { return maphash.Comparable(f.seed, k) }

// entry is the index entry of slot s for a key of hash h.
func (f *firsts) entry(s int, h uint64) uint32 {
	return uint32(h>>(32+f.slotBits))<<f.slotBits | uint32(s+1)
}

// home is the first index position of a key of hash h.
func (f *firsts) home(h uint64) int { return int(h) & (len(f.index) - 1) }

// find returns the slot holding a's key and its position in the index, or
// slot -1 and the empty position where it would go.
func (f *firsts) find(a [4]uint32) (slot, pos int) {
	if len(f.index) == 0 {
		return -1, -1
	}
	k := f.key(a)
	h := f.hash(k)
	tag := f.entry(0, h) - 1
	m := len(f.index) - 1
	sm := uint32(1)<<f.slotBits - 1
	for i := f.home(h); ; i = (i + 1) & m {
		v := f.index[i]
		if v == 0 {
			return -1, i
		}
		if v&^sm == tag && f.key(f.at(int(v&sm-1))) == k {
			return int(v&sm - 1), i
		}
	}
}

// get returns the address and time of a's key's entry.
func (f *firsts) get(a [4]uint32) (addr [4]uint32, t uint32, ok bool) {
	s, _ := f.find(a)
	if s < 0 {
		return addr, 0, false
	}
	return f.at(s), f.time(s), true
}

// remove forgets a's key's entry, if any.
func (f *firsts) remove(a [4]uint32) {
	if s, pos := f.find(a); s >= 0 {
		f.unindex(pos)
		f.words[s*f.st+f.aw] = 0
	}
}

// unindex empties index position pos, moving later entries of the same
// probe run back (deletion without tombstones).
func (f *firsts) unindex(pos int) {
	m := len(f.index) - 1
	sm := uint32(1)<<f.slotBits - 1
	f.live--
	for i, j := pos, pos; ; {
		f.index[i] = 0
		for {
			j = (j + 1) & m
			v := f.index[j]
			if v == 0 {
				return
			}
			// Move v into the hole at i unless its home lies in (i, j].
			if h := f.home(f.hash(f.key(f.at(int(v&sm - 1))))); (j-h)&m >= (j-i)&m {
				f.index[i] = v
				i = j
				break
			}
		}
	}
}

// put writes a (replacing its key's entry) at time t > 0, newest in the
// ring. When the ring is full its oldest entry goes first; put reports
// whether that entry was newer than cut (a loss: the caller notes it).
func (f *firsts) put(a [4]uint32, t uint32, cut int64) (lost bool) {
	if f.used == f.max {
		lost = f.dropHead(cut)
	}
	if (f.live+1)*4 > len(f.index)*3 { // at most 3/4 full: a probe past other keys reads no ring
		f.grow()
	}
	old, pos := f.find(a)
	if old >= 0 {
		f.words[old*f.st+f.aw] = 0
	} else {
		f.live++
	}
	s := f.head + f.used
	if s >= f.max {
		s -= f.max
	}
	if e := (s + 1) * f.st; e > len(f.words) {
		f.words = append(f.words, make([]uint32, e-len(f.words))...)
	}
	w := f.words[s*f.st : (s+1)*f.st]
	copy(w, a[4-f.aw:])
	w[f.aw] = max(t, 1)
	f.used++
	f.index[pos] = f.entry(s, f.hash(f.key(a)))
	return lost
}

// dropHead frees the oldest slot; it reports whether it held an entry
// newer than cut.
func (f *firsts) dropHead(cut int64) bool {
	s := f.head
	t := f.time(s)
	if t != 0 {
		_, pos := f.find(f.at(s))
		f.unindex(pos)
		f.words[s*f.st+f.aw] = 0
	}
	f.head++
	if f.head == f.max {
		f.head = 0
	}
	f.used--
	return t != 0 && int64(t) > cut
}

// grow doubles the index, reading the ring in order.
func (f *firsts) grow() { f.reindex(max(2*len(f.index), 1024)) }

// reindex builds an index of n positions for the entries in the ring.
func (f *firsts) reindex(n int) {
	if len(f.index) == n {
		clear(f.index)
	} else {
		f.index = make([]uint32, n)
	}
	m := n - 1
	for j := range f.used {
		s := f.head + j
		if s >= f.max {
			s -= f.max
		}
		if f.time(s) == 0 {
			continue
		}
		h := f.hash(f.key(f.at(s)))
		i := f.home(h)
		for f.index[i] != 0 {
			i = (i + 1) & m
		}
		f.index[i] = f.entry(s, h)
	}
}

// sweep frees the oldest slots while they are empty or not newer than cut
// (an entry written out of order may wait for the next sweep); emptied, a
// large ring gives its memory back. When more than half the entries go,
// the index is built again from those left (a sequential read of the ring)
// rather than searched for each.
func (f *firsts) sweep(cut int64) {
	n, gone := 0, 0
	for s := f.head; n < f.used; n++ {
		t := f.time(s)
		if int64(t) > cut {
			break
		}
		if t != 0 {
			gone++
		}
		if s++; s == f.max {
			s = 0
		}
	}
	if gone*2 <= f.live {
		for range n {
			f.dropHead(cut)
		}
	} else {
		for range n {
			f.words[f.head*f.st+f.aw] = 0
			if f.head++; f.head == f.max {
				f.head = 0
			}
		}
		f.used -= n
		f.live -= gone
		f.reindex(len(f.index))
	}
	if f.live == 0 && len(f.words) > 1024*f.st {
		*f = firsts{aw: f.aw, st: f.st, mask: f.mask, max: f.max, slotBits: f.slotBits, seed: f.seed}
	}
}

// shift moves every entry's time down by d (a new time base), keeping
// written entries at 1 or more.
func (f *firsts) shift(d uint32) {
	for s := range len(f.words) / f.st {
		if p := &f.words[s*f.st+f.aw]; *p != 0 {
			*p = max(*p, d+1) - d
		}
	}
}
