package report

import (
	"encoding/binary"
	"math/bits"
	"strings"
	"unsafe"
)

// queueIndex is the messages in flight by queue ID (Analyzer.queue).
//
// It is written here rather than a Go map of strings because of what a
// queue ID is: Postfix's are 5 to 12 hexadecimal characters (short IDs)
// or 12 to 17 of an alphabet of 52 (long IDs, enable_long_queue_ids), and
// relayguard's own records name 16 hexadecimal characters. Such an ID fits
// in two words, which the slot holds: a lookup hashes the two words with a
// few multiplications and compares them, where the map hashed the bytes
// (aeshash), compared them (memeq), kept a copy of every ID, and rehashed
// its table when deletions left it full of tombstones (every message is
// deleted at "removed"). Deletion here moves the following slots back
// (linear probing keeps no tombstones). IDs over 16 bytes, which neither
// writes, go to a map.
type queueIndex struct {
	slots  []qslot
	n      int   // IDs in slots
	shift  uint8 // an ID's place: its hash >> shift
	long   map[string]int32
	states [][]qstate // by number - 1, in blocks of qBlock (a state does not move)
	free   []int32    // the numbers of removed messages' states, zeroed
}

// qBlock is the states allocated at a time.
const qBlock = 1024

// qslot is one ID and its state's number; n == 0 marks a free slot. (A
// number, not a pointer: the table has no pointer for the collector to
// scan, nor a write barrier when a slot moves.)
type qslot struct {
	qkey
	n int32
}

// qkey is an ID of at most 16 bytes: its bytes (little-endian, zero-padded),
// its hash (whose top bits place it) and its length.
type qkey struct {
	k0, k1 uint64 // (two words, not an array: passed in registers)
	h, l   uint32
}

// qidSeed keys the queue IDs' hash: random per process, as keySeed.
var qidSeed = intHash(0x5155455545494453) // ("QUEUEIDS")

// qidKey is id's key (len(id) <= 16). The bytes are read a word (or half a
// word) at a time, the last read ending at id's end and shifted down: no
// read past the string, no copy.
func qidKey(id string) qkey {
	var k0, k1 uint64
	l := len(id)
	switch {
	case l >= 8:
		k0 = le64(id)
		if l > 8 {
			k1 = le64(id[l-8:]) >> (8 * (16 - l))
		}
	case l >= 4:
		k0 = uint64(le32(id)) | uint64(le32(id[l-4:]))>>(8*(8-l))<<32
	default:
		for i := l - 1; i >= 0; i-- {
			k0 = k0<<8 | uint64(id[i])
		}
	}
	// Each word multiplied by its own odd constant and mixed (murmur3's
	// finaliser over the sum, as intHash): the top 32 bits place the ID.
	x := (k0^qidSeed)*0x9e3779b97f4a7c15 + bits.RotateLeft64(k1*0xc2b2ae3d27d4eb4f, 31) + uint64(l)
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return qkey{k0, k1, uint32(x >> 32), uint32(l)}
}

// le64 and le32 read the first 8 and 4 bytes of s (at least as long).
func le64(s string) uint64 {
	return binary.LittleEndian.Uint64((*[8]byte)(unsafe.Pointer(unsafe.StringData(s)))[:]) // (no unsafe.Slice: its wrap check)
}

func le32(s string) uint32 {
	return binary.LittleEndian.Uint32((*[4]byte)(unsafe.Pointer(unsafe.StringData(s)))[:])
}

// state is the state numbered n.
func (x *queueIndex) state(n int32) *qstate {
	u := uint32(n - 1)
	return &x.states[u/qBlock][u%qBlock]
}

// newState numbers a zeroed state: a removed message's (in the cache
// still), else the next.
func (x *queueIndex) newState() int32 {
	if k := len(x.free); k > 0 {
		n := x.free[k-1]
		x.free = x.free[:k-1]
		return n
	}
	k := len(x.states)
	if k == 0 || len(x.states[k-1]) == qBlock {
		x.states = append(x.states, make([]qstate, 0, qBlock))
		k++
	}
	b := &x.states[k-1]
	*b = (*b)[:len(*b)+1]
	return int32((k-1)*qBlock + len(*b))
}

// find returns the index of key's slot and its number, or of the free slot
// that ends key's run and 0.
func (x *queueIndex) find(key qkey) (uint32, int32) {
	mask := uint32(len(x.slots) - 1)
	for i := key.h >> x.shift; ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.n == 0 {
			return i, 0
		}
		if s.h == key.h && s.k0 == key.k0 && s.k1 == key.k1 && s.l == key.l {
			return i, s.n
		}
	}
}

// get returns id's state, nil if id is not in flight.
func (x *queueIndex) get(id string) *qstate {
	if len(id) > 16 {
		if n := x.long[id]; n != 0 {
			return x.state(n)
		}
		return nil
	}
	if x.slots == nil {
		return nil
	}
	key := qidKey(id)
	if _, n := x.find(key); n != 0 {
		return x.state(n)
	}
	return nil
}

// add returns id's state, a zeroed one if id was not in flight. The
// pointer is valid until id is removed.
func (x *queueIndex) add(id string) *qstate {
	if len(id) > 16 {
		n := x.long[id]
		if n == 0 {
			if x.long == nil {
				x.long = map[string]int32{}
			}
			n = x.newState()
			x.long[strings.Clone(id)] = n
		}
		return x.state(n)
	}
	if x.slots == nil {
		x.slots, x.shift = make([]qslot, 64), 32-6
	}
	key := qidKey(id)
	i, n := x.find(key)
	if n != 0 {
		return x.state(n)
	}
	if 2*(x.n+1) > len(x.slots) { // at most half full: most lookups are of an ID not there
		x.grow()
		i, _ = x.find(key)
	}
	n = x.newState()
	x.slots[i] = qslot{key, n}
	x.n++
	return x.state(n)
}

// grow doubles the table (as keyIndex.grow: the slots are in the order of
// their hashes' top bits, so the doubled table is written front to back).
func (x *queueIndex) grow() {
	old := x.slots
	x.slots = populated(make([]qslot, 2*len(old)))
	x.shift--
	mask := uint32(len(x.slots) - 1)
	for i := range old {
		s := &old[i]
		if s.n == 0 {
			continue
		}
		j := s.h >> x.shift
		for x.slots[j].n != 0 {
			j = (j + 1) & mask
		}
		x.slots[j] = *s
	}
}

// remove forgets id (if in flight) and zeroes its state for reuse.
func (x *queueIndex) remove(id string) {
	var n int32
	if len(id) > 16 {
		if n = x.long[id]; n == 0 {
			return
		}
		delete(x.long, id)
	} else {
		if x.slots == nil {
			return
		}
		key := qidKey(id)
		var i uint32
		if i, n = x.find(key); n == 0 {
			return
		}
		// Backward shift: each following slot of the run moves into the
		// hole when the hole lies between its place and where it is
		// (cyclically), so that every ID stays reachable from its place
		// without a gap.
		mask := uint32(len(x.slots) - 1)
		for j := i; ; {
			j = (j + 1) & mask
			s := &x.slots[j]
			if s.n == 0 {
				break
			}
			if (j-s.h>>x.shift)&mask >= (j-i)&mask {
				x.slots[i] = *s
				i = j
			}
		}
		x.slots[i] = qslot{}
		x.n--
	}
	*x.state(n) = qstate{}
	x.free = append(x.free, n)
}

// len is the number of IDs in flight.
func (x *queueIndex) len() int { return x.n + len(x.long) }
