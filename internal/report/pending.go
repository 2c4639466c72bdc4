package report

import "unsafe"

// pending holds the updates of the large tables (the detail tables' leaf
// counters and the host/user tables) for a few lines, and then makes their
// lookups together. A table of a botnet's log has 100,000s of keys and a
// lookup is a cache miss or three (its slot, then the key's copy and its
// row); made one after the other, each miss waited for the one before it,
// and the counting goroutine's time went mostly to waiting (keyIndex.get
// was ~8 % of the report's CPU). The queued updates' slots are read first,
// all of them, then the rows and keys those slots name, so that the misses
// of pendMax lookups overlap, and only then are the updates made, in the
// order they were queued: the tables end exactly as if each had been made
// at once (reading a table's memory ahead changes nothing in it).
//
// The keys are copied into the queue's own buffer (a key may point into a
// line's read buffer or a scratch buffer the next line reuses). Whatever
// reads the tables flushes the queue first (Analyzer.Summary).
type pending struct {
	ops  [pendMax]pendOp
	n    int
	buf  []byte // the queued keys
	sink uint64 // what the reads ahead read (so that they are not left out)
}

// pendMax is how many lookups are made together.
const pendMax = 16

// pendOp is one queued update of one key of c or t.
type pendOp struct {
	x      *keyIndex  // c's or t's keys
	c      *counter   // pendInc's table
	t      *statTable // the others'
	kind   pendKind
	h      uint32 // keyHash of the key
	off, l int32  // the key: buf[off:off+l]
	v      int64
	f      float64
}

type pendKind uint8

const (
	pendInc      pendKind = iota // c's count of the key + 1
	pendFrom                     // a message from the key (sender or its domain) of v bytes
	pendSentDom                  // a recipient in the domain delivered after f seconds, of v bytes (0: unknown)
	pendSentUser                 // the recipient delivered, v bytes (0: unknown)
	pendDefer                    // a delivery to the domain deferred after f seconds
)

// pendSmall is the number of slots under which a table's updates are made
// at once: a table of a few thousand keys (a domain's recipients, most
// detail counters) stays in the cache, and queuing its updates only cost
// instructions. A table grows, never shrinks: its updates are made at once
// until it is large, and queued from then on, so that each table's updates
// are made in order.
const pendSmall = 4096

// inc queues c.inc(k).
func (p *pending) inc(c *counter, k string) {
	if len(c.keys.slots) < pendSmall {
		o := pendOp{x: &c.keys, c: c, kind: pendInc, h: keyHash(k)}
		o.apply(k)
		return
	}
	o := p.push(k)
	o.x, o.c, o.t, o.kind = &c.keys, c, nil, pendInc
}

// stat queues an update of t's row of k.
func (p *pending) stat(t *statTable, kind pendKind, k string, v int64, f float64) {
	if len(t.keys.slots) < pendSmall {
		o := pendOp{x: &t.keys, t: t, kind: kind, h: keyHash(k), v: v, f: f}
		o.apply(k)
		return
	}
	o := p.push(k)
	o.x, o.c, o.t, o.kind, o.v, o.f = &t.keys, nil, t, kind, v, f
}

func (p *pending) push(k string) *pendOp {
	if p.n == pendMax {
		p.flush()
	}
	o := &p.ops[p.n]
	p.n++
	o.h, o.off, o.l = keyHash(k), int32(len(p.buf)), int32(len(k))
	p.buf = append(p.buf, k...)
	return o
}

// flush makes the queued updates.
func (p *pending) flush() {
	ops := p.ops[:p.n]
	var x uint64
	// The slots, then the rows and keys they name, each group read
	// together (nothing but reads: the lookups below decide).
	for i := range ops {
		x += ops[i].x.touch(ops[i].h)
	}
	var found [pendMax]int32
	for i := range ops {
		o := &ops[i]
		n := o.x.find(o.h)
		found[i] = n
		if n < 0 {
			continue
		}
		x += uint64(o.x.refs[n])
		if o.c != nil {
			x += uint64(o.c.n[n])
		} else {
			x += uint64(o.t.rows[n].count)
		}
	}
	for i := range ops {
		if n := found[i]; n >= 0 {
			if k := ops[i].x.key(n); k != "" {
				x += uint64(k[0])
			}
		}
	}
	p.sink += x
	for i := range ops {
		o := &ops[i]
		var k string
		if o.l > 0 {
			k = unsafe.String(&p.buf[o.off], int(o.l))
		}
		o.apply(k)
	}
	p.n = 0
	p.buf = p.buf[:0]
}

// apply makes update o of key k.
func (o *pendOp) apply(k string) {
	if o.kind == pendInc {
		i, ok := o.x.getHashed(k, o.h)
		if !ok {
			o.c.n = append(o.c.n, 0)
		}
		o.c.n[i]++
		return
	}
	st := o.t.getHashed(k, o.h)
	switch o.kind {
	case pendFrom:
		st.count++
		st.size += o.v
	case pendSentDom:
		st.count++
		st.delaySum += o.f
		if st.delayMax == 0 || o.f > st.delayMax {
			st.delayMax = o.f
		}
		st.size += o.v
	case pendSentUser:
		st.count++
		st.size += o.v
	case pendDefer:
		st.defers++
		if st.delayMax == 0 || o.f > st.delayMax {
			st.delayMax = o.f
		}
	}
}
