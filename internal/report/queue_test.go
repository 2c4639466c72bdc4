package report

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// checkQueueAgainstMap applies ops to a queueIndex and to a Go map (the
// table it replaced) and fails at the first answer that differs. An op
// adds (Analyzer.q), looks up or removes one of ids; each message added
// gets its own size, so that a state that moved, was lost or was not
// zeroed for reuse shows.
func checkQueueAgainstMap(t *testing.T, ids []string, ops []uint16) {
	t.Helper()
	var x queueIndex
	m := map[string]int64{}
	var next int64
	for n, op := range ops {
		id := ids[int(op>>2)%len(ids)]
		switch op & 3 {
		case 0, 1:
			q := x.add(id)
			if want, ok := m[id]; ok {
				if q.size != want {
					t.Fatalf("op %d: add(%q) of a message in flight: size %d, want %d", n, id, q.size, want)
				}
				break
			}
			if *q != (qstate{}) {
				t.Fatalf("op %d: add(%q): a new message's state is not zero: %+v", n, id, *q)
			}
			next++
			q.size, q.whence, q.ndn = next, "w", true
			m[id] = next
		case 2:
			q := x.get(id)
			want, ok := m[id]
			if q == nil && ok || q != nil && (!ok || q.size != want) {
				t.Fatalf("op %d: get(%q) = %+v, want size %d (in flight: %v)", n, id, q, want, ok)
			}
		case 3:
			x.remove(id)
			delete(m, id)
			if q := x.get(id); q != nil {
				t.Fatalf("op %d: get(%q) after remove = %+v", n, id, *q)
			}
		}
		if x.len() != len(m) {
			t.Fatalf("op %d: len %d, map %d", n, x.len(), len(m))
		}
	}
	for id, want := range m {
		if q := x.get(id); q == nil || q.size != want {
			t.Fatalf("at the end: get(%q) = %+v, want size %d", id, q, want)
		}
	}
}

// The index answers as the map did through growth, runs that wrap past the
// end of the table and deletions in the middle of runs, for IDs of every
// length a log can hold (Postfix's short and long IDs, relayguard's, the
// empty ID, IDs past 16 bytes, and IDs that differ only in length or in
// trailing NUL bytes: the slot's zero padding must not make them equal).
func TestQueueIndexSameAsMap(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 2))
	ids := []string{"", "A", "A\x00", "A\x00\x00", "0123456789abcdef", "0123456789abcdef0", "0123456789abcdef\x00", "4Nq1Zt3Yjwz9sH3"}
	for len(ids) < 3000 {
		switch r.IntN(4) {
		case 0:
			ids = append(ids, fmt.Sprintf("%X", r.Uint64()>>r.IntN(40)))
		case 1:
			ids = append(ids, fmt.Sprintf("%016x", r.Uint64()))
		case 2:
			b := make([]byte, 12+r.IntN(10))
			for i := range b {
				b[i] = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"[r.IntN(52)]
			}
			ids = append(ids, string(b))
		default:
			ids = append(ids, fmt.Sprintf("%X", r.IntN(2000)))
		}
	}
	ops := make([]uint16, 300000)
	for i := range ops {
		ops[i] = uint16(r.Uint32())
	}
	// Few IDs: a small table, full of wrapped runs and removals.
	checkQueueAgainstMap(t, ids[:60], ops)
	// All of them: growth, and long runs.
	checkQueueAgainstMap(t, ids, ops)
	var x queueIndex
	for i, id := range ids {
		if q := x.add(id); q.size == 0 {
			q.size = int64(i + 1)
		}
	}
	for i, id := range ids {
		if q := x.get(id); q == nil {
			t.Fatalf("%q lost after growth", id)
		} else if q.size > int64(i+1) {
			t.Fatalf("%q: state of a later ID", id)
		}
	}
	for _, id := range ids {
		x.remove(id)
	}
	if x.len() != 0 {
		t.Fatalf("%d IDs left after removing all", x.len())
	}
}

func FuzzQueueIndexSameAsMap(f *testing.F) {
	f.Add([]byte("\x00\x01\x02\x03\x04\x05\x06\x07"))
	f.Fuzz(func(t *testing.T, ops []byte) {
		ids := make([]string, 64)
		for i := range ids {
			// IDs that share places: many collide in a 64-slot table.
			ids[i] = fmt.Sprintf("%X", i*i*7919%4093)
		}
		ids[0], ids[1], ids[2] = "", "\x00", "0123456789abcdef0"
		o := make([]uint16, len(ops))
		for i, b := range ops {
			o[i] = uint16(b)
		}
		checkQueueAgainstMap(t, ids, o)
	})
}

// qidKey reads an ID's bytes as the zero-padded little-endian words a copy
// into 16 bytes gives, for every length, without reading past the ID.
func TestQIDKeyWords(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	buf := make([]byte, 64)
	for range 20000 {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		l := r.IntN(17)
		off := r.IntN(len(buf) - l + 1)
		id := string(buf[off : off+l])
		var b [16]byte
		copy(b[:], id)
		want := [2]uint64{binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])}
		if k := qidKey(id); [2]uint64{k.k0, k.k1} != want || k.l != uint32(l) {
			t.Fatalf("qidKey(%q) = %x %x len %d, want %x len %d", id, k.k0, k.k1, k.l, want, l)
		}
	}
}
