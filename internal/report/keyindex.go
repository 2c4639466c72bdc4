package report

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
)

// keyIndex numbers distinct keys from 0, copying each key once into its
// arena; the keys are kept in order of their numbers.
//
// It is an open-addressing hash table written here rather than a Go map
// because of how the report's big tables grow: on a botnet's log a table
// (warnings, rejections by client) gets 100,000s of keys, and a Go map
// hashes every string key again each time it grows, reading each key's
// bytes from memory (a cache miss per key), with a 16-byte string header
// per slot. A slot here is 8 bytes, the key's hash and its number: the
// table grows without reading a key, and a lookup reads one slot and, when
// its hash matches, the key itself. Lookups never store the caller's
// string (a substring of a large read buffer would be kept alive).
type keyIndex struct {
	slots []uint64 // 0: free; else the low 32 bits of the key's hash and, above them, its number + 1
	refs  []keyRef // by number: the arena's copies
	ar    *arena
	shift uint8 // a key's place is its hash's top bits: hash >> shift
}

// keySeed seeds the hash of every table: random per process, so that a
// log's content (written by whoever connects) cannot be chosen to collide.
var keySeed = maphash.MakeSeed()

// get returns k's number and whether k was already known; a new key gets
// the next number (n, the number of keys so far).
func (x *keyIndex) get(k string) (int32, bool) {
	return x.getHashed(k, keyHash(k))
}

// keyHash is k's hash in every keyIndex.
func keyHash(k string) uint32 { return uint32(maphash.String(keySeed, k)) }

// touch reads the slot where a key of hash h is looked for first (for
// pending: the value read does not matter).
func (x *keyIndex) touch(h uint32) uint64 {
	if x.slots == nil {
		return 0
	}
	return x.slots[h>>x.shift]
}

// find returns the number in the first slot holding hash h, or -1: the key
// of hash h if it is known, nearly always (for pending, which reads that
// key's memory ahead; get decides).
func (x *keyIndex) find(h uint32) int32 {
	if x.slots == nil {
		return -1
	}
	mask := uint32(len(x.slots) - 1)
	for i := h >> x.shift; ; i = (i + 1) & mask {
		s := x.slots[i]
		if s == 0 {
			return -1
		}
		if uint32(s) == h {
			return int32(s>>32) - 1
		}
	}
}

// getHashed is get of k, whose hash is h (keyHash(k)).
func (x *keyIndex) getHashed(k string, h uint32) (int32, bool) {
	if x.slots == nil {
		x.slots, x.shift = make([]uint64, 8), 32-3
		if x.ar == nil {
			x.ar = &arena{}
		}
	}
	mask := uint32(len(x.slots) - 1)
	i := h >> x.shift
	for ; ; i = (i + 1) & mask {
		s := x.slots[i]
		if s == 0 {
			break
		}
		if uint32(s) == h {
			if n := int32(s>>32) - 1; x.key(n) == k {
				return n, true
			}
		}
	}
	n := int32(len(x.refs))
	x.refs = append(x.refs, x.ar.put(k))
	x.slots[i] = uint64(h) | uint64(n+1)<<32
	if 4*len(x.refs) >= 3*len(x.slots) { // at most 3/4 full
		x.grow()
	}
	return n, false
}

// grow doubles the table, placing each slot by the hash it holds. A slot's
// place is the top bits of its hash, so the slots are in the order of their
// hashes (but for the few that wrapped past the end), and the doubled table
// is written front to back: no cache miss per key, where places taken from
// the low bits scattered every key of a large table over the new one.
func (x *keyIndex) grow() {
	slots := populated(make([]uint64, 2*len(x.slots)))
	mask := uint32(len(slots) - 1)
	x.shift--
	for _, s := range x.slots {
		if s == 0 {
			continue
		}
		i := uint32(s) >> x.shift
		for slots[i] != 0 {
			i = (i + 1) & mask
		}
		slots[i] = s
	}
	x.slots = slots
}

func (x *keyIndex) len() int { return len(x.refs) }

// key is key number n.
func (x *keyIndex) key(n int32) string { return x.ar.str(x.refs[n]) }

// addrIndex numbers distinct client addresses (16 bytes, netip.Addr's
// As16, as two words: addrKey) from 0, as keyIndex does strings: a botnet's
// log has 100,000s of them, and a slot holding the key itself makes a
// lookup one cache miss. As in keyIndex, a key's place is the top bits of
// its hash, which the slot keeps, so that growing reads and writes the
// tables front to back.
type addrIndex struct {
	slots []addrSlot
	n     int32
	shift uint8 // a key's place: hash >> shift
}

// addrKey is an address's As16 as two big-endian words: compared and
// hashed as two registers (a [16]byte was copied through the stack in
// 16-byte moves, each stalled on the two 8-byte stores that wrote it).
type addrKey struct{ hi, lo uint64 }

// keyOfAddr is ip's addrKey (ip unmapped or not: As16 maps IPv4).
func keyOfAddr(ip netip.Addr) addrKey {
	b := ip.As16()
	return addrKey{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// as16 is k's address bytes (As16).
func (k addrKey) as16() (b [16]byte) {
	binary.BigEndian.PutUint64(b[:8], k.hi)
	binary.BigEndian.PutUint64(b[8:], k.lo)
	return b
}

// addrSeed keys addrHash: random per process, as keySeed.
var addrSeed = maphash.String(keySeed, "addrIndex") | 1

// addrHash is k's hash in addrIndex: intHash's mixing of each word, seeded
// per process (maphash.Bytes of the 16 bytes was ~45 instructions and
// three calls a lookup, twice an event: doQueued's look ahead and get).
func addrHash(k addrKey) uint32 {
	return uint32(intHash(k.lo^intHash(k.hi^addrSeed)) >> 32)
}

type addrSlot struct {
	k addrKey
	h uint32 // the key's hash
	n int32  // the key's number + 1; 0: free
}

// place is where get starts looking for a key of hash h.
func (x *addrIndex) place(h uint32) uint32 { return h >> x.shift }

// get returns k's number and whether k was already known; a new key gets
// the next number.
func (x *addrIndex) get(k addrKey) (int32, bool) {
	if x.slots == nil {
		x.slots, x.shift = make([]addrSlot, 64), 32-6
	}
	mask := uint32(len(x.slots) - 1)
	h := addrHash(k)
	i := h >> x.shift
	for ; x.slots[i].n != 0; i = (i + 1) & mask {
		if s := &x.slots[i]; s.h == h && s.k == k {
			return s.n - 1, true
		}
	}
	x.n++
	x.slots[i] = addrSlot{k, h, x.n}
	if 4*int(x.n) >= 3*len(x.slots) { // at most 3/4 full
		old := x.slots
		x.slots = populated(make([]addrSlot, 2*len(old)))
		x.shift--
		mask = uint32(len(x.slots) - 1)
		for _, s := range old {
			if s.n == 0 {
				continue
			}
			j := s.h >> x.shift
			for x.slots[j].n != 0 {
				j = (j + 1) & mask
			}
			x.slots[j] = s
		}
	}
	return x.n - 1, false
}

// intIndex numbers distinct 64-bit keys from 0, as addrIndex does
// addresses: the abuse view's (address, user) pairs and its subnets. A
// slot holds the key itself, so a lookup is one cache miss; a Go map of
// the subnets of a botnet's 100,000s of addresses cost more than ranking
// them.
type intIndex struct {
	slots []intSlot
	keys  []uint64 // by number
	shift uint8    // a key's place (as in addrIndex): intHash(k) >> shift
}

type intSlot struct {
	k uint64
	n int32 // the key's number + 1; 0: free
}

// intSeed keys intIndex's hash: random per process, as keySeed.
var intSeed = maphash.String(keySeed, "intIndex") | 1

// intHash mixes k (murmur3's finaliser over k xor the seed).
func intHash(k uint64) uint64 {
	k ^= intSeed
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// get returns k's number and whether k was already known; a new key gets
// the next number (len(keys)).
func (x *intIndex) get(k uint64) (int32, bool) {
	if x.slots == nil {
		x.slots, x.shift = make([]intSlot, 64), 64-6
	}
	mask := uint64(len(x.slots) - 1)
	i := intHash(k) >> x.shift
	for ; x.slots[i].n != 0; i = (i + 1) & mask {
		if x.slots[i].k == k {
			return x.slots[i].n - 1, true
		}
	}
	n := int32(len(x.keys))
	x.keys = append(x.keys, k)
	x.slots[i] = intSlot{k, n + 1}
	if 4*len(x.keys) >= 3*len(x.slots) { // at most 3/4 full
		old := x.slots
		x.slots = populated(make([]intSlot, 2*len(old)))
		x.shift--
		mask = uint64(len(x.slots) - 1)
		for _, s := range old {
			if s.n == 0 {
				continue
			}
			j := intHash(s.k) >> x.shift
			for x.slots[j].n != 0 {
				j = (j + 1) & mask
			}
			x.slots[j] = s
		}
	}
	return n, false
}

func (x *intIndex) len() int { return len(x.keys) }
