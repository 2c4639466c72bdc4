package guard

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
)

// firsts gives exactly what a plain list of its slots gives (the model:
// oldest first, a rewritten or removed key leaves its old slot empty, the
// oldest slot goes when max are in use), over random writes, removals and
// sweeps of keys that share prefixes, probe runs and the ring's wrap; and,
// in a ring of maxFirsts (4 bits of tag: one probe in 16 of another key
// matches the tag), keys are still told apart by their whole address.
func TestFirstsMatchesModel(t *testing.T) {
	for _, c := range []struct {
		v6        bool
		bits      int
		size, ops int
	}{{false, 32, 700, 60000}, {false, 24, 700, 60000}, {true, 128, 700, 60000}, {true, 64, 700, 60000}, {true, 48, 700, 60000},
		{false, 24, maxFirsts, 6000}, {true, 64, maxFirsts, 6000}} {
		t.Run(fmt.Sprintf("v6=%v/%d/%d", c.v6, c.bits, c.size), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(c.bits), 9))
			size := c.size
			f := newFirsts(c.v6, c.bits, size)
			type slot struct {
				key, addr [4]uint32
				t         uint32
				dead      bool
			}
			var model []slot
			addr := func() [4]uint32 { // few distinct keys: many rewrites
				var a [4]uint32
				if c.v6 {
					a = [4]uint32{0x20010db8, uint32(r.IntN(3)), uint32(r.IntN(300)) << 16, uint32(r.IntN(4))}
				} else {
					a[3] = 10<<24 | uint32(r.IntN(1500))<<4 | uint32(r.IntN(3))
				}
				if c.bits == 24 {
					a[3] = 10<<24 | uint32(r.IntN(1500))<<8 | uint32(r.IntN(3))
				}
				return a
			}
			find := func(k [4]uint32) int {
				for i, s := range model {
					if !s.dead && s.key == k {
						return i
					}
				}
				return -1
			}
			now := uint32(1000)
			for op := range c.ops {
				now += uint32(r.IntN(3))
				cut := int64(now) - 400
				a := addr()
				k := f.key(a)
				switch x := r.IntN(20); {
				case x < 14:
					if i := find(k); i >= 0 {
						model[i].dead = true
					}
					wantLost := false
					if len(model) == size {
						wantLost = !model[0].dead && int64(model[0].t) > cut
						model = model[1:]
					}
					model = append(model, slot{key: k, addr: a, t: now})
					if lost := f.put(a, now, cut); lost != wantLost {
						t.Fatalf("op %d: put lost %v, want %v", op, lost, wantLost)
					}
				case x < 18:
					if i := find(k); i >= 0 {
						model[i].dead = true
					}
					f.remove(a)
				case x < 19: // a sweep, now and then of most entries
					sc := cut + int64(r.IntN(2))*int64(r.IntN(400))
					for len(model) > 0 && (model[0].dead || int64(model[0].t) <= sc) {
						model = model[1:]
					}
					f.sweep(sc)
				}
				ga, gt, ok := f.get(a)
				i := find(k)
				if ok != (i >= 0) || ok && (ga != model[i].addr || gt != model[i].t) {
					t.Fatalf("op %d: get %x: %x %d %v, want %+v", op, a, ga, gt, ok, i >= 0 && ok)
				}
				live := 0
				for _, s := range model {
					if !s.dead {
						live++
					}
				}
				if f.len() != live || f.used != len(model) {
					t.Fatalf("op %d: %d entries in %d slots, want %d in %d", op, f.len(), f.used, live, len(model))
				}
			}
		})
	}
}

// A flood of one-shot addresses, each in a /24 (and IPv6 /48) of its own,
// that renews max_tracked records many times over, pushes out no address
// or prefix that reaches its threshold inside its window: a /24 whose five
// addresses come three max_tracked fresh addresses apart, a /24 with two
// failing addresses followed by more than FirstsPerTracked × max_tracked
// fresh ones before its last three, an IPv6 /64 (3 addresses) and /48 (10
// addresses in distinct /64s), an address failing five times in nine
// minutes. A /24 with four addresses (the threshold less one), failing
// again, and an address with four failures are not banned, nor is any
// address of the flood; the tables stay within their bounds.
func TestSlowSubnetsAmidFlood(t *testing.T) {
	c := config.Default().Guard
	c.MaxTracked = 1000
	var bans []string
	g := New(Options{Config: c, Replay: true, OnBan: func(b Ban) { bans = append(bans, b.Prefix.String()) }})
	m := g.o.Counters.(*Memory)
	r := rand.New(rand.NewPCG(5, 6))
	specials := map[int][]string{}
	at := func(pos int, a string) { specials[pos] = append(specials[pos], a) }
	for k := range 5 {
		at(3000*k, fmt.Sprintf("10.2.0.%d", 10+k)) // A: slow /24
		if k < 4 {
			at(500+3000*k, fmt.Sprintf("10.3.0.%d", 10+k)) // B: four addresses
			at(2500+1000*k, "10.9.9.8")                    // four failures
		}
		at(2000+1000*k, "10.9.9.9") // five failures in 400 s
	}
	at(13000, "10.3.0.10") // B's first address again: still four
	at(100, "10.4.0.1")    // C: two addresses, then the flood, then three
	at(200, "10.4.0.2")
	for k := range 3 {
		at(14000+100*k, fmt.Sprintf("10.4.0.%d", 3+k))
		at(1000+3000*k, fmt.Sprintf("2001:db8:d::%d", k+1)) // D: /64
	}
	for k := range 10 {
		at(1500+1000*k, fmt.Sprintf("2001:db8:e:%d::1", k)) // E: /48
	}
	when := t0
	publish := func(a netip.Addr) {
		when = when.Add(100 * time.Millisecond)
		g.Publish(context.Background(), event.Event{Time: when, Kind: event.AuthFailure, Source: "postfix", IP: a})
	}
	for i := range 16000 {
		for _, a := range specials[i] {
			publish(netip.MustParseAddr(a))
		}
		var a netip.Addr
		if i%5 == 4 { // a /48 of its own
			a = netip.AddrFrom16([16]byte{0x24, 0, byte(i >> 8), byte(i), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
		} else { // a /24 of its own
			n := (i * 7919) % (180 << 16)
			a = netip.AddrFrom4([4]byte{byte(20 + n>>16), byte(n >> 8), byte(n), byte(1 + r.IntN(250))})
		}
		publish(a)
		if r.IntN(50) == 0 {
			publish(a)
		}
	}
	slices.Sort(bans)
	want := []string{"10.2.0.0/24", "10.4.0.0/24", "10.9.9.9/32", "2001:db8:d::/64", "2001:db8:e::/48"}
	if !slices.Equal(bans, want) {
		t.Errorf("banned %v, want %v", bans, want)
	}
	checkBounds(t, m, c.MaxTracked)
	if m.Evicted() == 0 {
		t.Errorf("nothing was dropped: the flood did not fill the first failures")
	}
}

// A replay of 20,000 attackers, one after the other over 28 hours of log
// (each banned for an hour), holds no more than about twice the bans in
// force at once (~720, plus those ended within findtime), not every ban
// it decided; the history of a dropped ban is kept: the first attacker,
// failing again at the end, is banned for the second time, for two hours.
func TestReplayBanMapBounded(t *testing.T) {
	c := config.Default().Guard
	c.Subnets = nil
	var bans []Ban
	g := New(Options{Config: c, Replay: true, OnBan: func(b Ban) { bans = append(bans, b) }})
	when := t0
	attack := func(a netip.Addr) {
		for range c.MaxRetry {
			when = when.Add(time.Second)
			g.Publish(context.Background(), event.Event{Time: when, Kind: event.AuthFailure, Source: "postfix", IP: a})
		}
	}
	most := 0
	for i := range 20000 {
		attack(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		most = max(most, g.Held())
	}
	attack(netip.AddrFrom4([4]byte{10, 0, 0, 0}))
	if len(bans) != 20001 {
		t.Fatalf("%d bans decided, want 20001", len(bans))
	}
	if most > 2*(720+120)+1 {
		t.Errorf("held up to %d bans, want at most %d", most, 2*(720+120)+1)
	}
	if b := bans[len(bans)-1]; b.Count != 2 || b.Until.Sub(b.Created) != 2*time.Hour {
		t.Errorf("the first attacker again: ban %d for %s, want the second, for 2h", b.Count, b.Until.Sub(b.Created))
	}
	if n, _ := g.o.Store.ListBans(context.Background()); len(n) > most {
		t.Errorf("the store holds %d bans, the guard %d", len(n), most)
	}
}
