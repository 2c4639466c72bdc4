package queue

// What the intake journal does when the disk fails it: how a failed write
// or fdatasync gives its segment back (instead of opening a new segment
// file for every failed commit). Its maintainer's failures are logged
// through internal/faillog.

// takeBack leaves no record in the bytes [from, to) of sg written by a
// failed write or a failed fdatasync, so that the segment takes the next
// records at from: the part inside the preallocated length is zeroed (no
// new space needed), the part past it is truncated away. If that fails
// too, the segment is broken: nothing more is appended to it (the next
// record opens a new segment). Called with j.mu held.
func (j *journal) takeBack(sg *segment, from, to int64) {
	if to <= from {
		return
	}
	var err error
	if z := min(to, sg.alloc); z > from {
		_, err = sg.f.WriteAt(make([]byte, z-from), from)
	}
	if err == nil && to > sg.alloc {
		err = sg.f.Truncate(max(from, sg.alloc))
	}
	if err != nil {
		sg.broken = true
		j.s.log.Warn("spool: journal segment not reusable after a failed write: the next commit opens a new one", "segment", sg.path, "err", err)
	}
}

// rewind takes back everything written to sg after the last successful
// fdatasync, after one failed: a failed fdatasync may have lost any of
// the pages written since (and a later one may succeed without writing
// them), so a record appended after them could be unreachable at a
// replay. Every commit appended meanwhile fails (commit checks sg.gen);
// what was synced before stays. Called with j.mu held.
func (j *journal) rewind(sg *segment) {
	j.takeBack(sg, sg.synced, sg.size)
	sg.size = sg.synced
	sg.gen++
}
