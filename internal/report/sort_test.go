package report

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

// TestNthLargest compares the quickselect with a sort on random counts,
// mostly equal ones as in a botnet's tables.
func TestNthLargest(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		cs := make([]int64, 1+r.IntN(300))
		spread := 1 + r.IntN(20)
		for i := range cs {
			cs[i] = int64(r.IntN(spread))
		}
		n := 1 + r.IntN(len(cs))
		sorted := slices.Clone(cs)
		slices.Sort(sorted)
		want := sorted[len(sorted)-n]
		if got := nthLargest(slices.Clone(cs), n); got != want {
			t.Fatalf("nthLargest(%v, %d) = %d, want %d", cs, n, got, want)
		}
	}
}

// TestKeyIndex numbers 200,000 keys (through many growths) as a Go map
// would, finds each again, and keeps copies, not the caller's bytes.
func TestKeyIndex(t *testing.T) {
	x := keyIndex{ar: &arena{}}
	want := map[string]int32{}
	buf := []byte("unknown[")
	for i := range 200000 {
		buf = fmt.Appendf(buf[:8], "%d.%d.%d.%d]", i>>16, i>>8&255, i&255, i%7)
		k := unsafe.String(&buf[0], len(buf)) // overwritten below
		n, known := x.get(k)
		if known || n != int32(i) {
			t.Fatalf("key %d %q: number %d, known %v", i, k, n, known)
		}
		want[string(buf)] = n
		if n, known := x.get(string(buf)); !known || n != int32(i) {
			t.Fatalf("key %q again: number %d, known %v", buf, n, known)
		}
	}
	if x.len() != len(want) {
		t.Fatalf("%d keys, want %d", x.len(), len(want))
	}
	for k, n := range want {
		if got, known := x.get(k); !known || got != n || x.key(n) != k {
			t.Fatalf("%q: number %d (known %v, key %q), want %d", k, got, known, x.key(n), n)
		}
	}
	if n, known := x.get(""); known || n != int32(len(want)) {
		t.Fatalf("empty key: %d, %v", n, known)
	}
}

// TestAddrIndex numbers 100,000 addresses (IPv4 and IPv6) through many
// growths and finds each again.
func TestAddrIndex(t *testing.T) {
	var x addrIndex
	var keys []addrKey
	for i := range 100000 {
		var b [16]byte
		if i%3 == 0 {
			b = netip.AddrFrom4([4]byte{byte(i >> 16), byte(i >> 8), byte(i), 7}).As16()
		} else {
			b[0], b[1], b[7], b[8], b[15] = 0x20, 0x01, byte(i>>16), byte(i>>8), byte(i)
		}
		k := keyOfAddr(netip.AddrFrom16(b))
		if k.as16() != b {
			t.Fatalf("address %d: key %x gives back %x", i, b, k.as16())
		}
		keys = append(keys, k)
		if n, known := x.get(k); known || n != int32(i) {
			t.Fatalf("address %d: number %d, known %v", i, n, known)
		}
	}
	for i, k := range keys {
		if n, known := x.get(k); !known || n != int32(i) {
			t.Fatalf("address %d again: number %d, known %v", i, n, known)
		}
	}
	if n, known := x.get(addrKey{}); known || n != int32(len(keys)) {
		t.Fatalf("zero address: %d, %v", n, known)
	}
}

// TestSortKeyed compares the radix ranking with a comparison sort on
// tables large enough to take it, with counts and key heads that tie often
// (runs split by digit, sorted by insertion, and tied on every digit).
func TestSortKeyed(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{1, 255, 256, 300, 5000} {
		for range 20 {
			var keys []string
			seen := map[string]bool{}
			for len(keys) < size {
				var k string
				switch r.IntN(4) {
				case 0:
					k = fmt.Sprintf("%d.%d.%d.%d", r.IntN(3), r.IntN(300), r.IntN(256), r.IntN(256))
				case 1:
					k = fmt.Sprintf("host%d.Example.%c", r.IntN(50), 'a'+rune(r.IntN(3)))
				case 2:
					k = fmt.Sprintf("unknown[10.0.%d.%d]: x%s", r.IntN(4), r.IntN(9), string(rune('a'+r.IntN(26))))
				default: // tied on the 16 bytes the radix ranks by
					k = fmt.Sprintf("sixteen-byte-head%d", r.IntN(5000))
				}
				if !seen[k] {
					seen[k] = true
					keys = append(keys, k)
				}
			}
			spread := []int64{1, 3, 1 << 40}[r.IntN(3)]
			rows := make([]CountRow, len(keys))
			for i, k := range keys {
				rows[i] = CountRow{k, r.Int64N(spread) - spread/4}
			}
			want := slices.Clone(rows)
			slices.SortFunc(want, func(a, b CountRow) int {
				if a.Count != b.Count {
					return cmpInt(b.Count, a.Count)
				}
				na, nb := string(appendNormalizedHost(nil, a.Key)), string(appendNormalizedHost(nil, b.Key))
				if na != nb {
					return strings.Compare(na, nb)
				}
				return strings.Compare(a.Key, b.Key)
			})
			got := byHost(slices.Clone(rows), -1, func(r *CountRow) int64 { return r.Count }, func(r *CountRow) string { return r.Key })
			if !slices.Equal(got, want) {
				t.Fatalf("%d rows: radix ranking differs from the comparison sort", size)
			}
		}
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestByHostTop: with a limit, byHost returns the first n rows of the
// whole ranking, however many rows tie at the cut (most, on a botnet's
// log), with the normalised keys from the keys or from a norm function.
func TestByHostTop(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for round := range 120 {
		size := 1 + r.IntN(1500)
		var keys []string
		seen := map[string]bool{}
		for len(keys) < size {
			var k string
			switch r.IntN(4) {
			case 0:
				k = fmt.Sprintf("%d.%d.%d.%d", r.IntN(3), r.IntN(300), r.IntN(256), r.IntN(256))
			case 1:
				k = fmt.Sprintf("host%d.Example.%c", r.IntN(50), 'a'+rune(r.IntN(3)))
			case 2:
				k = fmt.Sprintf("::%x", r.IntN(1<<16)) // ("::12" normalises as 58.58.49.50 does)
			default:
				k = fmt.Sprintf("58.58.%d.%d", 48+r.IntN(10), 48+r.IntN(10))
			}
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
		spread := []int64{1, 2, 5, 1 << 40}[r.IntN(4)]
		rows := make([]CountRow, len(keys))
		for i, k := range keys {
			rows[i] = CountRow{k, r.Int64N(spread)}
		}
		count := func(r *CountRow) int64 { return r.Count }
		key := func(r *CountRow) string { return r.Key }
		all := byHost(slices.Clone(rows), -1, count, key)
		for _, n := range []int{1, 3, 20, 100, size - 1, size, size + 5} {
			if n <= 0 {
				continue
			}
			want := limit(all, n)
			if got := byHost(slices.Clone(rows), n, count, key); !slices.Equal(got, want) {
				t.Fatalf("round %d: %d rows, top %d: %v, want %v", round, size, n, got, want)
			}
			norm := func(dst []byte, r *CountRow) []byte { return appendNormalizedHost(dst, r.Key) }
			if got := byHostNorm(slices.Clone(rows), n, count, key, norm); !slices.Equal(got, want) {
				t.Fatalf("round %d: %d rows, top %d with norm: %v, want %v", round, size, n, got, want)
			}
		}
	}
}

// domainRows ranks as the comparison sort it replaced: count, then bytes,
// descending, then the name (names alike in their first 8 bytes, and
// prefixes of each other, among them).
func TestDomainRowsSameAsSortFunc(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, size := range []int{0, 1, 7, 255, 256, 3000} {
		tab := newStatTable(&arena{})
		for tab.keys.len() < size {
			var k string
			switch r.IntN(3) {
			case 0:
				k = fmt.Sprintf("s%d.example", r.IntN(5000))
			case 1:
				k = fmt.Sprintf("mail.example.%d", r.IntN(300))
			default:
				k = "mail.exa"[:r.IntN(9)]
			}
			st := tab.getHashed(k, keyHash(k))
			st.count, st.size = int64(r.IntN(4)), int64(r.IntN(3))*1000
			st.defers, st.delaySum, st.delayMax = int64(r.IntN(2)), float64(r.IntN(9)), float64(r.IntN(5))
		}
		for _, n := range []int{-1, 0, 5} {
			var want []DomainRow
			for i := range tab.keys.refs {
				st := &tab.rows[i]
				row := DomainRow{Domain: tab.keys.key(int32(i)), Count: st.count, Bytes: st.size, Defers: st.defers, MaxDelay: st.delayMax}
				if st.count > 0 {
					row.AvgDelay = st.delaySum / float64(st.count)
				}
				want = append(want, row)
			}
			slices.SortFunc(want, func(a, b DomainRow) int {
				if a.Count != b.Count {
					return cmpInt(b.Count, a.Count)
				}
				if a.Bytes != b.Bytes {
					return cmpInt(b.Bytes, a.Bytes)
				}
				return strings.Compare(a.Domain, b.Domain)
			})
			if n >= 0 && n < len(want) {
				want = want[:n]
			}
			if got := domainRows(tab, n, true); !slices.Equal(got, want) {
				t.Fatalf("%d rows, limit %d: domainRows differs from the comparison sort:\n%v\n%v", size, n, got, want)
			}
		}
	}
}

// TestRunLargestFirst: every summary job runs once, on any number of
// workers, and one worker takes them largest first (ties in their order).
func TestRunLargestFirst(t *testing.T) {
	for _, workers := range []int{1, 2, 5, 40} {
		var mu sync.Mutex
		var order []int
		ran := make([]int, 30)
		var jobs []summaryJob
		for i := range ran {
			rows := (i * 7919) % 13 // (ties among 30 jobs)
			jobs = append(jobs, summaryJob{rows, func() {
				mu.Lock()
				ran[i]++
				order = append(order, rows*100+i)
				mu.Unlock()
			}})
		}
		runLargestFirst(jobs, workers)
		for i, n := range ran {
			if n != 1 {
				t.Fatalf("%d workers: job %d ran %d times", workers, i, n)
			}
		}
		if workers == 1 && !slices.IsSortedFunc(order, func(a, b int) int {
			if a/100 != b/100 {
				return b/100 - a/100 // rows descending
			}
			return a%100 - b%100 // then the jobs' order
		}) {
			t.Fatalf("one worker ran the jobs in the order %v, want by rows descending", order)
		}
	}
}
