package firewall

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// checkRules reports an error when the input chain lacks one of the four
// drop rules Setup wrote (someone ran `nft flush chain` or deleted the
// chain): the sets alone would then ban nobody, and the guard answers the
// error with Setup.
func (e *nft) checkRules() error {
	c, err := e.c()
	if err != nil {
		return err
	}
	rules, err := c.GetRules(e.table(), &nftables.Chain{Name: e.cfg.Chain, Table: e.table()})
	if err != nil {
		return fmt.Errorf("firewall: read nftables chain inet %s %s: %w", e.cfg.Table, e.cfg.Chain, err)
	}
	want := map[string]bool{}
	for k := temp4; k <= perm6; k++ {
		want[e.set(k).Name] = true
	}
	for _, r := range rules {
		for _, x := range r.Exprs {
			if l, ok := x.(*expr.Lookup); ok {
				delete(want, l.SetName)
			}
		}
	}
	if len(want) > 0 {
		missing := make([]string, 0, len(want))
		for n := range want {
			missing = append(missing, n)
		}
		slices.Sort(missing)
		return fmt.Errorf("firewall: nftables chain inet %s %s has no drop rule for set(s) %s", e.cfg.Table, e.cfg.Chain, strings.Join(missing, ", "))
	}
	return nil
}
