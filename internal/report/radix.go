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
// count's, and the common start of the keys). Which bytes vary is found
// first (one pass of xors), so that the histograms are made only for those.
func radixCountHead(ks []keyed) {
	// The 24 digits, least significant first: head2's 8 bytes, head's 8,
	// then the count's (descending: the complement of its
	// order-preserving unsigned form).
	words := func(k *keyed) [3]uint64 { return [3]uint64{k.head2, k.head, ^(uint64(k.count) ^ 1<<63)} }
	first := words(&ks[0])
	var vary [3]uint64
	for j := range ks {
		w := words(&ks[j])
		vary[0] |= w[0] ^ first[0]
		vary[1] |= w[1] ^ first[1]
		vary[2] |= w[2] ^ first[2]
	}
	var digits [24]uint8 // the varying digits: word*8 + byte
	nd := 0
	for w := range 3 {
		for b := range 8 {
			if byte(vary[w]>>(8*b)) != 0 {
				digits[nd] = uint8(w*8 + b)
				nd++
			}
		}
	}
	if nd == 0 {
		return
	}
	hist := make([][256]int32, nd)
	for j := range ks {
		w := words(&ks[j])
		for d, dg := range digits[:nd] {
			hist[d][byte(w[dg>>3]>>(8*(dg&7)))]++
		}
	}
	tmp := make([]keyed, len(ks))
	src, dst := ks, tmp
	for d, dg := range digits[:nd] {
		h := &hist[d]
		var pos [256]int32
		var sum int32
		for b := range 256 {
			pos[b] = sum
			sum += h[b]
		}
		shift := 8 * (dg & 7)
		switch dg >> 3 {
		case 0:
			for j := range src {
				b := byte(src[j].head2 >> shift)
				dst[pos[b]] = src[j]
				pos[b]++
			}
		case 1:
			for j := range src {
				b := byte(src[j].head >> shift)
				dst[pos[b]] = src[j]
				pos[b]++
			}
		default:
			for j := range src {
				b := byte(^(uint64(src[j].count) ^ 1<<63) >> shift)
				dst[pos[b]] = src[j]
				pos[b]++
			}
		}
		src, dst = dst, src
	}
	if &src[0] != &ks[0] {
		copy(ks, src)
	}
}
