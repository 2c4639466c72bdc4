package queue

import (
	"log/slog"
	"time"
)

// For the external tests that inject file system failures (they import
// internal/deliver, which imports this package).
type OSFS = osFS

// OpenSpoolFS is openSpool: OpenSpool over fs.
var OpenSpoolFS = openSpool

// SettleJournal makes every message committed so far an ordinary msg/
// file, as the queue commands of another process see them.
func SettleJournal(s *Spool) {
	if s.j != nil {
		s.j.settle(false)
	}
}

// OpenSpoolJournalFS is OpenSpool (with the intake journal) over fs.
func OpenSpoolJournalFS(dir string, groupCommit time.Duration, log *slog.Logger, fs FS) (*Spool, error) {
	return openSpoolJournal(dir, groupCommit, log, fs, true)
}
