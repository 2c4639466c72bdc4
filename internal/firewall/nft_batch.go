package firewall

// The batch path of the nftables enforcer (Batcher): many bans decided at
// once reach the kernel in one netlink batch per set. One ban at a time
// is Add, in nft.go; both decide through nft.record.

import (
	"context"
	"fmt"

	"github.com/google/nftables"

	"github.com/relayguard/relayguard/internal/ban"
)

// AddAll implements Batcher: the bans that overlap no other of their set
// are written as elements in one netlink batch (per set, up to msgElems ×
// batchMsgs elements each); the sets where one overlaps are re-diffed once.
func (e *nft) AddAll(ctx context.Context, bans []ban.Ban) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.load(); err != nil {
		e.reset()
		return err
	}
	now := e.now()
	direct := map[setKind][]segment{}
	rediff := map[setKind]bool{}
	for _, b := range bans {
		p, err := checkPrefix(b.Prefix)
		if err != nil {
			return err
		}
		if b.Expired(now) {
			continue
		}
		k, until, overlap, left, moved := e.record(p, b.Until)
		if moved {
			rediff[left] = true
		}
		if overlap {
			rediff[k] = true
		} else {
			direct[k] = append(direct[k], segment{rng: prefixRange(p), Until: until})
		}
	}
	for k := temp4; k <= perm6; k++ {
		var err error
		switch {
		case rediff[k]:
			err = e.syncKind(k) // the re-diff writes the direct ones too
		case len(direct[k]) > 0:
			var c *nftables.Conn
			if c, err = e.c(); err == nil {
				err = e.write(c, k, nil, direct[k])
			}
		}
		if err != nil {
			e.reset()
			return e.recover(fmt.Errorf("firewall: nftables add %d bans: %w", len(bans), err))
		}
	}
	return nil
}
