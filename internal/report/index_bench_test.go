package report

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// The tables' cost on a botnet's log is mostly inserting keys seen once:
// these numbers hundreds of thousands of new keys, growth included, and
// then finds each of them again in random order.

func BenchmarkAddrIndex(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	keys := make([]addrKey, 300000)
	for i := range keys {
		keys[i] = keyOfAddr(netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}))
	}
	for b.Loop() {
		var x addrIndex
		for _, k := range keys {
			x.get(k)
		}
		for _, k := range keys {
			x.get(k)
		}
	}
}

func BenchmarkKeyIndex(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	keys := make([]string, 200000)
	for i := range keys {
		keys[i] = fmt.Sprintf("unknown[%d.%d.%d.%d]: SASL LOGIN authentication failed: UGFzc3dvcmQ6", r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256))
	}
	for b.Loop() {
		x := keyIndex{ar: &arena{}}
		for _, k := range keys {
			x.get(k)
		}
		for _, k := range keys {
			x.get(k)
		}
	}
}

func BenchmarkIntIndex(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	keys := make([]uint64, 300000)
	for i := range keys {
		keys[i] = uint64(r.Uint32())<<32 | uint64(r.IntN(300))
	}
	for b.Loop() {
		var x intIndex
		for _, k := range keys {
			x.get(k)
		}
		for _, k := range keys {
			x.get(k)
		}
	}
}
