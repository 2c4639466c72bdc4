package audit

import "fmt"

// Plan lists the remedies --fix would apply, once each, in the order of
// the findings (most severe first); foreign ones are marked.
func (r *Report) Plan() []*Remedy {
	var out []*Remedy
	seen := map[string]bool{}
	for _, f := range r.Findings {
		if f.remedy == nil || seen[f.remedy.Key] {
			continue
		}
		seen[f.remedy.Key] = true
		out = append(out, f.remedy)
	}
	return out
}

// Fix applies the plan: relayguard's own remedies always, changes to
// another program's configuration only with yes. show is called with
// each remedy before it is applied. Findings whose remedy was applied are
// marked fixed; they no longer count for the exit status.
func (r *Report) Fix(yes bool, show func(string)) {
	done := map[string]bool{}
	for _, rem := range r.Plan() {
		res := FixResult{Show: rem.Show}
		switch {
		case rem.Foreign && !yes:
			res.Skipped = "changes another program's configuration: add --yes"
		default:
			if show != nil {
				show(rem.Show)
			}
			if err := rem.Apply(); err != nil {
				res.Error = err.Error()
			} else {
				res.Applied = true
				done[rem.Key] = true
			}
		}
		r.Fixes = append(r.Fixes, res)
	}
	for i := range r.Findings {
		if rem := r.Findings[i].remedy; rem != nil && done[rem.Key] {
			r.Findings[i].Fixed = true
		}
	}
}

// String names a remedy for logs.
func (rem *Remedy) String() string {
	if rem.Foreign {
		return fmt.Sprintf("%s (needs --yes)", rem.Show)
	}
	return rem.Show
}
