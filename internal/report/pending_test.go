package report

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// TestPendingSameAsAtOnce: updates queued through pending (made pendMax
// at a time, their memory read ahead) leave the tables exactly as the
// same updates made one by one — keys numbered in the same order, the same
// counts, sizes and delays, the quirky first-delay maximum included — with
// keys repeated within one group, empty keys, keys in a buffer the
// caller overwrites after each call, and tables that grow from made at
// once (pendSmall) to queued.
func TestPendingSameAsAtOnce(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	ar := &arena{}
	p := &pending{}
	queued := struct {
		c         *counter
		dom, user *statTable
	}{newCounter(ar), newStatTable(ar), newStatTable(ar)}
	direct := struct {
		c         *counter
		dom, user *statTable
	}{newCounter(ar), newStatTable(ar), newStatTable(ar)}
	get := func(t *statTable, k string) *stat { return t.getHashed(k, keyHash(k)) }
	scratch := make([]byte, 0, 64)
	for i := range 50000 {
		var k string
		switch r.IntN(4) {
		case 0:
			k = "" // (an empty key: a sender "<>" that lowerDomain kept, a reason that is empty)
		case 1:
			k = fmt.Sprintf("warm%d", r.IntN(8)) // repeated within a group
		default:
			k = fmt.Sprintf("unknown[%d.%d.%d.%d]: SASL LOGIN authentication failed", r.IntN(256), r.IntN(256), r.IntN(4), i%7)
		}
		scratch = append(scratch[:0], k...)
		ks := string(scratch)                                        // a copy for the direct update
		kq := unsafe.String(unsafe.SliceData(scratch), len(scratch)) // (as a line's key: not a copy)
		v, f := r.Int64N(100000), float64(r.IntN(5))/2
		switch r.IntN(5) {
		case 0:
			p.inc(queued.c, kq)
			direct.c.inc(ks)
		case 1:
			p.stat(queued.dom, pendFrom, kq, v, 0)
			st := get(direct.dom, ks)
			st.count++
			st.size += v
		case 2:
			p.stat(queued.dom, pendSentDom, kq, v, f)
			st := get(direct.dom, ks)
			st.count++
			st.delaySum += f
			if st.delayMax == 0 || f > st.delayMax {
				st.delayMax = f
			}
			st.size += v
		case 3:
			p.stat(queued.user, pendSentUser, kq, v, 0)
			st := get(direct.user, ks)
			st.count++
			st.size += v
		default:
			p.stat(queued.dom, pendDefer, kq, 0, f)
			st := get(direct.dom, ks)
			st.defers++
			if st.delayMax == 0 || f > st.delayMax {
				st.delayMax = f
			}
		}
		for j := range scratch { // the caller's buffer is reused
			scratch[j] = '#'
		}
	}
	p.flush()
	for _, x := range []*keyIndex{&queued.c.keys, &queued.dom.keys, &queued.user.keys} {
		if len(x.slots) < pendSmall {
			t.Fatalf("a table of %d keys never queued (pendSmall %d slots)", x.len(), pendSmall)
		}
	}
	if q, d := queued.c, direct.c; q.len() != d.len() {
		t.Fatalf("counter: %d keys queued, %d at once", q.len(), d.len())
	}
	for i := range direct.c.keys.refs {
		if q, d := queued.c.keys.key(int32(i)), direct.c.keys.key(int32(i)); q != d || queued.c.n[i] != direct.c.n[i] {
			t.Fatalf("counter key %d: queued %q %d, at once %q %d", i, q, queued.c.n[i], d, direct.c.n[i])
		}
	}
	for name, pair := range map[string][2]*statTable{"domain": {queued.dom, direct.dom}, "user": {queued.user, direct.user}} {
		q, d := pair[0], pair[1]
		if q.keys.len() != d.keys.len() {
			t.Fatalf("%s: %d keys queued, %d at once", name, q.keys.len(), d.keys.len())
		}
		for i := range d.rows {
			if qk, dk := q.keys.key(int32(i)), d.keys.key(int32(i)); qk != dk || q.rows[i] != d.rows[i] {
				t.Fatalf("%s key %d: queued %q %+v, at once %q %+v", name, i, qk, q.rows[i], dk, d.rows[i])
			}
		}
	}
	if p.n != 0 || len(p.buf) != 0 {
		t.Fatalf("flushed queue holds %d updates, %d bytes", p.n, len(p.buf))
	}
}
