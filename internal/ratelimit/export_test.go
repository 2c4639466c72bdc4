package ratelimit

// Mismatches is how many totals the database returned that were not the
// copy's (counts): 0 unless a writer without the triggers wrote.
func Mismatches(s *SQLStore) int64 { return s.c.mismatches.Load() }
