package report

import (
	"bytes"
	"cmp"
	"slices"
	"strings"
)

// keyed is a row being ranked by byHost. It holds no pointer (no write
// barrier as entries move); the normalised key is buf[off:off+n] of the
// ranking's buffer and the row is rows[i].
type keyed struct {
	count     int64
	head      uint64 // the first 8 bytes of the normalised key, big-endian: most comparisons end here
	head2     uint64 // its next 8 bytes
	off, n, i int32
}

// radixMin is the number of rows from which sortKeyed sorts by radix.
const radixMin = 256

// sortKeyed orders ks by count, descending, then by normalised key (buf),
// then by the key itself (keys). Large tables are sorted by radix on
// (count, head, head2) — linear, where a comparison sort of a botnet's
// 155,000 warning rows made 2.5 million comparisons — and only the runs
// that tie on all three are then sorted by comparison.
func sortKeyed(ks []keyed, buf []byte, keys []string) {
	compare := func(a, b keyed) int {
		if c := cmp.Compare(b.count, a.count); c != 0 {
			return c
		}
		if c := cmp.Compare(a.head, b.head); c != 0 {
			return c
		}
		if c := cmp.Compare(a.head2, b.head2); c != 0 {
			return c
		}
		if c := bytes.Compare(buf[a.off:a.off+a.n], buf[b.off:b.off+b.n]); c != 0 {
			return c
		}
		return strings.Compare(keys[a.i], keys[b.i])
	}
	if len(ks) < radixMin {
		slices.SortFunc(ks, compare)
		return
	}
	radixCountHead(ks)
	for i := 0; i < len(ks); {
		j := i + 1
		for j < len(ks) && ks[j].count == ks[i].count && ks[j].head == ks[i].head && ks[j].head2 == ks[i].head2 {
			j++
		}
		if j-i > 1 {
			slices.SortFunc(ks[i:j], compare)
		}
		i = j
	}
}

// radixCountHead sorts ks by count, descending, then head and head2,
// ascending: a stable least-significant-digit radix sort over the 24 bytes
// of the three, skipping the bytes every entry has alike (most of a
// count's).
func radixCountHead(ks []keyed) {
	const digits = 24
	digit := func(k *keyed, d int) byte {
		switch {
		case d < 8:
			return byte(k.head2 >> (8 * d))
		case d < 16:
			return byte(k.head >> (8 * (d - 8)))
		}
		// count descending: the complement of its order-preserving
		// unsigned form.
		return byte(^(uint64(k.count) ^ 1<<63) >> (8 * (d - 16)))
	}
	var hist [digits][256]int32
	for j := range ks {
		k := &ks[j]
		for d := range digits {
			hist[d][digit(k, d)]++
		}
	}
	tmp := make([]keyed, len(ks))
	src, dst := ks, tmp
	for d := range digits {
		h := &hist[d]
		if h[digit(&src[0], d)] == int32(len(src)) {
			continue // one value: nothing to move
		}
		var pos [256]int32
		var sum int32
		for b := range 256 {
			pos[b] = sum
			sum += h[b]
		}
		for j := range src {
			b := digit(&src[j], d)
			dst[pos[b]] = src[j]
			pos[b]++
		}
		src, dst = dst, src
	}
	if &src[0] != &ks[0] {
		copy(ks, src)
	}
}
