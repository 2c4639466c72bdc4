package queue

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
