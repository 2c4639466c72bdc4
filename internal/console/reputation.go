package console

import (
	"context"
	"net/http"
	"time"

	"github.com/relayguard/relayguard/internal/audit"
)

// Reputation is the audit's reputation monitor (*audit.Monitor) of the
// process: the one owner of "is this host on a block list, are its
// certificates expiring". The console shows its latest check and asks it
// to check now; it does not query the lists itself.
type Reputation interface {
	State() audit.State
	CheckNow(ctx context.Context) audit.State
}

// reputationView is the reputation panel of the overview.
type reputationView struct {
	Available bool      `json:"available"`
	Interval  string    `json:"interval,omitempty"` // "1h"; "" when it checks only when asked
	Checked   time.Time `json:"checked,omitzero"`
	Running   bool      `json:"running"`
	// Lists says whether any DNS list is asked ([dnsbl] zones and
	// domain_zones, [audit] catalog); without, only the certificates are.
	Lists    bool            `json:"lists"`
	Listed   []audit.Finding `json:"listed"` // own addresses and domains on block lists
	Other    []audit.Finding `json:"other"`  // the certificates' findings
	Problems []audit.Problem `json:"problems"`
	Notes    []string        `json:"notes,omitempty"`
}

func (c *Console) reputationView() reputationView {
	v := reputationView{Listed: []audit.Finding{}, Other: []audit.Finding{}, Problems: []audit.Problem{}}
	if c.o.Reputation == nil {
		return v
	}
	v = viewReputation(c.o.Reputation.State())
	v.Lists = c.listsAsked()
	return v
}

func (c *Console) listsAsked() bool {
	d := c.o.Config.DNSBL
	return len(d.Zones)+len(d.DomainZones) > 0 || c.o.Config.Audit.Catalog
}

func viewReputation(st audit.State) reputationView {
	v := reputationView{Available: true, Checked: st.Checked, Running: st.Running, Problems: st.Problems, Notes: st.Notes,
		Listed: []audit.Finding{}, Other: []audit.Finding{}}
	if st.Interval > 0 {
		v.Interval = humanDuration(st.Interval)
	}
	for _, f := range st.Findings {
		if f.Check == "identity.blocklisted" {
			v.Listed = append(v.Listed, f)
		} else {
			v.Other = append(v.Other, f)
		}
	}
	return v
}

// reputationStatus: GET /api/reputation
func (c *Console) reputationStatus(w http.ResponseWriter, _ *http.Request, _ *principal) {
	writeJSON(w, http.StatusOK, c.reputationView())
}

// reputationCheck: POST /api/reputation/check has the monitor check now
// (the DNS lists and the certificates; at most the lists' timeout and a
// little more) and answers with the outcome. A change is alerted as the
// monitor's own checks are.
func (c *Console) reputationCheck(w http.ResponseWriter, r *http.Request, p *principal) {
	if c.o.Reputation == nil {
		c.act(w, r, p, "reputation.check", "", "", nil, userError{http.StatusServiceUnavailable, "no reputation monitor in this process"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*c.o.Config.DNSBL.Timeout.D()+10*time.Second)
	defer cancel()
	v := viewReputation(c.o.Reputation.CheckNow(ctx))
	v.Lists = c.listsAsked()
	c.act(w, r, p, "reputation.check", "", "", v, nil)
}
