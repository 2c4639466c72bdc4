package logwatch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logline"
)

// chunk is a run of whole lines of a replayed file.
type chunk struct {
	seq    int
	data   []byte
	sunk   func() // called once the chunk's events are sunk (nil: none)
	events []event.Event
	lines  int
	err    error // a fault on the mapping while parsing (logline.CatchFault)
	done   chan struct{}
}

// ReplayFile parses a whole log file (plain, gzip or xz) on several cores and
// hands its events to sink in file order, a batch at a time; it returns the
// number of lines. Each worker has its own Parser: the year of traditional
// syslog timestamps is inferred per chunk, from the clock, which is right for
// any log younger than a year, also across New Year.
//
// Lines are parsed in place: the strings in the events point into the
// chunk's buffer, which is never reused or modified (hence unsafe.String),
// so nothing is copied per line, and the events may be kept.
func ReplayFile(ctx context.Context, path string, sink func([]event.Event)) (int64, error) {
	return replayFile(ctx, path, nil, sink, false)
}

// ReplayFileTransient is ReplayFile for a sink that keeps nothing of the
// events it is given once it returns (watch --replay: the guard and Once
// copy what they keep): each batch and the buffer its strings point into
// are reused for a later chunk, so that a replay allocates a few buffers
// instead of one per MiB of log and one event slice per chunk, which were
// 90 % of its allocations and most of its garbage collection.
//
// keep (nil: every event) is asked on the parsing cores which events the
// sink wants at all (the guard: the kinds it counts, and logins), so that
// the others are neither queued nor passed through the sink in file order.
func ReplayFileTransient(ctx context.Context, path string, keep func(event.Kind) bool, sink func([]event.Event)) (int64, error) {
	return replayFile(ctx, path, keep, sink, true)
}

func replayFile(ctx context.Context, path string, keep func(event.Kind) bool, sink func([]event.Event), reuse bool) (int64, error) {
	r, err := logline.Open(ctx, path)
	if err != nil {
		return 0, fmt.Errorf("logwatch: %w", err)
	}
	defer r.Close()
	var n int64
	if f, ok := logline.PlainFile(r); ok && reuse {
		n, err = replayMapped(ctx, f, keep, sink)
	} else {
		n, err = replay(ctx, r, keep, sink, reuse)
	}
	if err != nil {
		return n, fmt.Errorf("logwatch: %s: %w", path, err)
	}
	return n, nil
}

const chunkSize = 1 << 20

func replay(ctx context.Context, r io.Reader, keep func(event.Kind) bool, sink func([]event.Event), reuse bool) (int64, error) {
	return pipeline(ctx, keep, sink, reuse, nil, func(work, order chan<- *chunk, free <-chan *chunk) error {
		var carry []byte
		for seq := 0; ; seq++ {
			if ctx.Err() != nil {
				return nil
			}
			c := newChunk(free)
			c.seq = seq
			buf := c.data[:0]
			if cap(buf) < chunkSize+len(carry) {
				buf = make([]byte, 0, chunkSize+len(carry)+16<<10) // (room for a longer carry next time)
			}
			buf = append(buf, carry...)
			n, err := io.ReadFull(r, buf[len(carry):cap(buf)])
			buf = buf[:len(carry)+n]
			last := bytes.LastIndexByte(buf, '\n')
			if err != nil { // EOF: the rest is the last line
				if len(buf) > 0 {
					c.data = buf
					work <- c
					order <- c
				}
				if err == io.EOF || err == io.ErrUnexpectedEOF {
					err = nil
				}
				return err
			}
			if last < 0 {
				carry = append(carry[:0], buf...) // a line longer than a chunk: read on
				c.data = buf[:0]
				seq--
				continue
			}
			carry = append(carry[:0], buf[last+1:]...)
			c.data = buf[:last+1]
			work <- c
			order <- c
		}
	})
}

// replayMapped is replay over a plain file mapped into memory: the chunks
// are slices of the mapping, so the file is neither copied into buffers
// nor read by syscalls (on a 1M-line log that was ~10 % of the CPU time);
// the mapping is removed once the last batch is sunk.
func replayMapped(ctx context.Context, f *os.File, keep func(event.Kind) bool, sink func([]event.Event)) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	if size == 0 {
		return 0, nil
	}
	if int64(int(size)) != size {
		return 0, fmt.Errorf("%d bytes: too large to map", size)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(data)
	_ = unix.Madvise(data, unix.MADV_SEQUENTIAL)
	return pipeline(ctx, keep, sink, true, data, func(work, order chan<- *chunk, free <-chan *chunk) error {
		for seq, off := 0, 0; off < len(data); seq++ {
			if ctx.Err() != nil {
				return nil
			}
			c := newChunk(free)
			end := min(off+chunkSize, len(data))
			if end < len(data) {
				if i := bytes.IndexByte(data[end:], '\n'); i >= 0 {
					end += i + 1
				} else {
					end = len(data)
				}
			}
			c.seq, c.data = seq, data[off:end]
			// Once sunk, the chunk's pages leave the process's resident
			// set: a mapped page that is touched again (the first and
			// last page are shared with the neighbours) is read back
			// from the page cache, so this loses nothing.
			page := os.Getpagesize()
			from, to := off/page*page, end/page*page
			c.sunk = func() { _ = unix.Madvise(data[from:to], unix.MADV_DONTNEED) }
			off = end
			work <- c
			order <- c
		}
		return nil
	})
}

// newChunk returns a sunk chunk from free (nil: none), emptied, or a new one.
func newChunk(free <-chan *chunk) *chunk {
	select {
	case c := <-free:
		c.events, c.lines, c.done = c.events[:0], 0, make(chan struct{})
		return c
	default:
		return &chunk{done: make(chan struct{})}
	}
}

// pipeline parses the chunks produce sends (to work and, in the same order,
// to order) on every core and hands their events to sink in order; with
// reuse, sunk chunks come back on free. When the chunks are slices of
// mapped, a fault on it (the file truncated while read) in any of the
// goroutines that read it is logline.ErrTruncated: the events of the chunk
// that faulted and of those after it are not sunk, and pipeline returns
// once no goroutine reads the mapping any more.
func pipeline(ctx context.Context, keep func(event.Kind) bool, sink func([]event.Event), reuse bool, mapped []byte, produce func(work, order chan<- *chunk, free <-chan *chunk) error) (int64, error) {
	workers := max(runtime.GOMAXPROCS(0), 1)
	work := make(chan *chunk, workers*2)
	order := make(chan *chunk, workers*4)
	// With reuse, chunks come back here once sunk: at most every chunk in
	// work and order, one being read and one being sunk are in flight.
	var free chan *chunk
	if reuse {
		free = make(chan *chunk, workers*6+2)
	}
	for range workers {
		go func() {
			if mapped != nil {
				debug.SetPanicOnFault(true)
			}
			p := &Parser{Want: keep}
			last := 0 // events of this worker's last chunk: the next one's estimate
			for c := range work {
				// Each chunk's year from the clock: not from the
				// chunks this worker happened to take before (the
				// scheduling's choice), which made the years of a log
				// whose months go back and forth differ from run to run.
				p.Lines = logline.Parser{}
				c.err = parseChunk(p, c, keep, last, mapped)
				last = len(c.events)
				close(c.done)
			}
		}()
	}
	readErr := make(chan error, 1)
	go func() {
		defer close(work)
		defer close(order)
		readErr <- func() (err error) {
			if mapped != nil {
				debug.SetPanicOnFault(true)
				defer logline.CatchFault(mapped, &err)
			}
			return produce(work, order, free)
		}()
	}()
	if mapped != nil {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	}
	var lines int64
	var fault error
	for c := range order {
		<-c.done
		lines += int64(c.lines)
		if fault == nil {
			fault = c.err
		}
		if fault == nil && len(c.events) > 0 {
			fault = sinkChunk(sink, c.events, mapped)
		}
		if c.sunk != nil {
			c.sunk()
		}
		if free != nil {
			select {
			case free <- c:
			default:
			}
		}
	}
	if err := <-readErr; err != nil || fault == nil {
		return lines, err
	}
	return lines, fault
}

// parseChunk parses c's lines into c.events (logline.CatchFault when the
// chunk is a slice of mapped).
func parseChunk(p *Parser, c *chunk, keep func(event.Kind) bool, last int, mapped []byte) (err error) {
	if mapped != nil {
		defer logline.CatchFault(mapped, &err)
	}
	if c.events == nil {
		c.events = make([]event.Event, 0, last+last/8+16)
	}
	s := unsafe.String(unsafe.SliceData(c.data), len(c.data))
	for len(s) > 0 {
		i := indexNL(s)
		line := s
		if i >= 0 {
			line, s = s[:i], s[i+1:]
		} else {
			s = ""
		}
		c.lines++
		if e, ok := p.Parse(line); ok && (keep == nil || keep(e.Kind)) {
			c.events = append(c.events, e)
		}
	}
	return nil
}

// sinkChunk hands events to sink, which copies what it keeps of their
// strings (slices of mapped, when it is not nil).
func sinkChunk(sink func([]event.Event), events []event.Event, mapped []byte) (err error) {
	if mapped != nil {
		defer logline.CatchFault(mapped, &err)
	}
	sink(events)
	return nil
}

func indexNL(s string) int { return strings.IndexByte(s, '\n') }
