package queue

// Reading the journal's segments: for the replay at the spool's open, and
// read-only, for the queue commands of another process while a server
// runs (OpenReadOnly), so that they list a message from its 250 on instead
// of from its retirement to msg/ up to about 0.6 s later.

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
)

type segFile struct {
	seq  uint64
	name string
}

// segFiles lists the segment files in dir, oldest first.
func segFiles(dir string) ([]segFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("spool journal %s: %w", dir, err)
	}
	var segs []segFile
	for _, e := range ents {
		var seq uint64
		if _, err := fmt.Sscanf(e.Name(), segPrefix+"%016x", &seq); err != nil || e.Name() != fmt.Sprintf(segPrefix+"%016x", seq) {
			continue
		}
		segs = append(segs, segFile{seq, e.Name()})
	}
	sort.Slice(segs, func(a, b int) bool { return segs[a].seq < segs[b].seq })
	return segs, nil
}

// scanned is what a journal's segments hold: the live messages (the last
// record of each, in the order first seen), the removed ones, and the
// segment (index in segs) of each message's last record.
type scanned struct {
	live    map[string][]byte
	order   []string
	removed map[string]bool
	segOf   map[string]int
}

// scan reads the records of segs. A damaged tail is logged (the replay);
// with running (a server owns the segments), a segment deleted meanwhile
// (retired: its messages are msg/ files now) is skipped, and a tail being
// written is not damage.
func (j *journal) scan(segs []segFile, running bool) (scanned, error) {
	sc := scanned{live: map[string][]byte{}, removed: map[string]bool{}, segOf: map[string]int{}}
	for si, sg := range segs {
		b, err := os.ReadFile(filepath.Join(j.dir, sg.name))
		if running && errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return sc, fmt.Errorf("spool journal: %w", err)
		}
		n := 0
		for off := 0; off < len(b); off += n {
			kind, id, payload, m, ok := decodeRecord(b[off:], sg.seq)
			if !ok {
				// The end of the records: zeros (the preallocated rest)
				// or nothing. Anything else is damage, named here: a
				// write torn by the crash (never acknowledged), or a
				// record damaged on disk. Nothing after it is read: a
				// scan for the next header could land in a message's
				// data, which a sender chose.
				if rest := bytes.TrimRight(b[off:], "\x00"); len(rest) > 0 && !running {
					j.s.log.Warn("spool: journal segment damaged: replay stops at the first record that fails its check, the bytes after it are ignored",
						"segment", filepath.Join(j.dir, sg.name), "offset", off, "ignored", len(rest))
				}
				break
			}
			n = m
			switch kind {
			case recMsg:
				sc.segOf[id] = si
				if _, dup := sc.live[id]; !dup {
					sc.order = append(sc.order, id)
				}
				sc.live[id] = payload
				delete(sc.removed, id)
			case recDel:
				delete(sc.live, id)
				sc.removed[id] = true
			}
		}
	}
	return sc, nil
}

// OpenReadOnly opens a spool for `relayguard queue list` and `show` in
// another process than the server: as OpenForAdmin, and while a server
// runs, the messages its journal holds (acknowledged, not yet written to
// msg/) are listed and shown too, read from its segments without changing
// them. A record is only there once its fdatasync began, so a message
// listed might (if that fdatasync fails) never have been acknowledged; a
// message delivered in the last 100 ms may still be listed. The spool
// refuses every change.
func OpenReadOnly(dir string, log *slog.Logger) (*Spool, error) {
	s, err := OpenForAdmin(dir, log)
	if err != nil {
		return nil, err
	}
	s.readOnly = true
	if !s.serverRuns() {
		return s, nil // OpenForAdmin replayed what there was
	}
	j := &journal{s: s, dir: filepath.Join(dir, "journal"), idx: map[string]*jentry{}}
	segs, err := segFiles(j.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return s, nil
		}
		s.Close()
		return nil, err
	}
	sc, err := j.scan(segs, true)
	if err != nil {
		s.Close()
		return nil, err
	}
	for id, payload := range sc.live {
		if _, err := os.Stat(filepath.Join(s.msgDir, id+".msg")); err == nil {
			continue // retired meanwhile: the file is read as usual
		}
		dataLen, js, ok := splitPayload(payload)
		if !ok {
			continue
		}
		_, err := os.Stat(filepath.Join(s.msgDir, id+".env"))
		j.idx[id] = &jentry{payload: payload, dataLen: dataLen, json: js, hasEnv: err == nil}
	}
	s.j = j
	return s, nil
}

// errReadOnly is the answer of a spool opened with OpenReadOnly to a change.
var errReadOnly = errors.New("spool: opened read-only (queue list/show)")
