package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// AuditFile is where `relayguard audit` keeps its latest report (the JSON
// of --json), under the data directory; the console shows its findings.
func AuditFile(dataDir string) string { return filepath.Join(dataDir, "audit", "latest.json") }

// auditView is the latest audit as the overview shows it. Only the fields
// the page needs are read, so that a report with more fields still reads.
type auditView struct {
	Available bool           `json:"available"`
	Host      string         `json:"host,omitempty"`
	Started   time.Time      `json:"started,omitzero"`
	Score     int            `json:"score"`
	Grade     string         `json:"grade,omitempty"`
	Counts    map[string]int `json:"counts,omitempty"`
	Findings  []auditFinding `json:"findings"`
	Problems  int            `json:"problems"`
	Error     string         `json:"error,omitempty"`
	Hint      string         `json:"hint,omitempty"`
}

type auditFinding struct {
	Check    string `json:"check"`
	Area     string `json:"area"`
	Severity string `json:"severity"`
	Subject  string `json:"subject"`
	Title    string `json:"title"`
	Fix      string `json:"fix"`
	Fixed    bool   `json:"fixed,omitempty"`
}

// maxAuditFindings is how many findings (most severe first, as the audit
// sorts them) the overview shows.
const maxAuditFindings = 20

func latestAudit(dataDir string) auditView {
	v := auditView{Findings: []auditFinding{}}
	path := AuditFile(dataDir)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		v.Hint = "no audit yet: run relayguard audit (it keeps its latest report in " + path + ")"
		return v
	}
	if err != nil {
		v.Error = err.Error()
		return v
	}
	var rep struct {
		Host     string         `json:"host"`
		Started  time.Time      `json:"started"`
		Score    int            `json:"score"`
		Grade    string         `json:"grade"`
		Counts   map[string]int `json:"counts"`
		Findings []auditFinding `json:"findings"`
		Problems []any          `json:"problems"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		v.Error = fmt.Sprintf("%s: %v", path, err)
		return v
	}
	v.Available, v.Host, v.Started, v.Score, v.Grade, v.Counts = true, rep.Host, rep.Started, rep.Score, rep.Grade, rep.Counts
	v.Problems = len(rep.Problems)
	if rep.Findings != nil {
		v.Findings = rep.Findings[:min(len(rep.Findings), maxAuditFindings)]
	}
	return v
}
