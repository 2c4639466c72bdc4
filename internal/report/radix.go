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
// (count, head, head2) — where a comparison sort of a botnet's 155,000
// warning rows made 2.5 million comparisons — and only the runs that tie
// on all three, or are short, are then sorted by comparison.
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
	// Which of the 24 digits vary (one pass of xors): the others are
	// skipped at every level (most of a count's bytes, the common start of
	// the keys).
	first := radixWords(&ks[0])
	var vary [3]uint64
	for j := range ks {
		w := radixWords(&ks[j])
		vary[0] |= w[0] ^ first[0]
		vary[1] |= w[1] ^ first[1]
		vary[2] |= w[2] ^ first[2]
	}
	var digits []uint8
	for d := range uint8(24) {
		if byte(vary[d>>3]>>(56-8*(d&7))) != 0 {
			digits = append(digits, d)
		}
	}
	radixMSD(ks, make([]keyed, len(ks)), digits, compare)
}

// radixWords are the three words ks are ranked on, in order: the count
// (descending: the complement of its order-preserving unsigned form), head
// and head2.
func radixWords(k *keyed) [3]uint64 {
	return [3]uint64{countWord(k.count), k.head, k.head2}
}

// countWord is a count's radix word: descending counts in ascending order.
func countWord(c int64) uint64 { return ^(uint64(c) ^ 1<<63) }

// radixMSDMin is the length from which radixMSD splits a run by its next
// digit rather than sorting it by insertion.
const radixMSDMin = 32

// radixMSD sorts ks by the digits (byte d of radixWords, most significant
// first: d>>3 is the word, d&7 the byte from the top), then by compare:
// a most-significant-digit radix sort, which splits ks by its first digit
// into runs and each run by the next, until a run is short or tied on
// every digit. A least-significant-digit sort made a pass over the whole
// table (~6 MB on a botnet's log) for each of ~17 varying digits; here the
// runs fit in the cache after a digit or two, and most runs end short of
// the last digit. tmp is scratch of ks's length.
func radixMSD(ks, tmp []keyed, digits []uint8, compare func(a, b keyed) int) {
	for len(digits) > 0 && len(ks) >= radixMSDMin {
		d := digits[0]
		w, shift := d>>3, 56-8*(d&7)
		var count [256]int32
		// (a loop per word: the digit is one load and shift, where
		// radixWords made all three words for each row)
		switch w {
		case 0:
			for j := range ks {
				count[byte(countWord(ks[j].count)>>shift)]++
			}
		case 1:
			for j := range ks {
				count[byte(ks[j].head>>shift)]++
			}
		default:
			for j := range ks {
				count[byte(ks[j].head2>>shift)]++
			}
		}
		if count[byte(radixWords(&ks[0])[w]>>shift)] == int32(len(ks)) {
			digits = digits[1:] // the same in the whole run
			continue
		}
		var pos [256]int32
		var sum int32
		for b := range 256 {
			pos[b] = sum
			sum += count[b]
		}
		switch w {
		case 0:
			for j := range ks {
				b := byte(countWord(ks[j].count) >> shift)
				tmp[pos[b]] = ks[j]
				pos[b]++
			}
		case 1:
			for j := range ks {
				b := byte(ks[j].head >> shift)
				tmp[pos[b]] = ks[j]
				pos[b]++
			}
		default:
			for j := range ks {
				b := byte(ks[j].head2 >> shift)
				tmp[pos[b]] = ks[j]
				pos[b]++
			}
		}
		copy(ks, tmp)
		var start int32
		for b := range 256 {
			if n := count[b]; n > 1 {
				radixMSD(ks[start:start+n], tmp[start:start+n], digits[1:], compare)
			}
			start += count[b]
		}
		return
	}
	if len(ks) >= radixMSDMin {
		slices.SortFunc(ks, compare)
		return
	}
	// A short run: an insertion sort, which compares the words inline.
	for i := 1; i < len(ks); i++ {
		x := ks[i]
		j := i
		for ; j > 0 && keyedLess(&x, &ks[j-1], compare); j-- {
			ks[j] = ks[j-1]
		}
		ks[j] = x
	}
}

// keyedLess reports whether a ranks before b.
func keyedLess(a, b *keyed, compare func(a, b keyed) int) bool {
	switch {
	case a.count != b.count:
		return a.count > b.count
	case a.head != b.head:
		return a.head < b.head
	case a.head2 != b.head2:
		return a.head2 < b.head2
	}
	return compare(*a, *b) < 0
}
