package report

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/logwatch"
	"github.com/relayguard/relayguard/internal/maillog"
)

// batch is a run of lines parsed by the reading goroutine.
type batch struct {
	raw    []string
	parsed []logline.Line
	kind   []lineKind
	cmdAt  []int32 // where the program's Postfix command starts (commandAt)
	hr     []int
	day    []dayKey
	rk     []rejectKey
	ev     []parsed    // logwatch's reading of messages, for the abuse view
	evAt   []int32     // a line's index in ev, -1: none
	own    []ownParsed // maillog's reading of relayguard's own records
	ownAt  []int32     // a line's index in own, -1: none
	chunks []*chunk    // the read chunks its lines are in
	jobs   []queuedJob // the client work the counting queued (abuseState.batch)
	jobX   []clientJob // the jobs the batch does not tell whole
	err    error
}

// newBatch returns an empty batch with its arrays resident and writable
// (populated): the collector can scan a fresh batch (it holds strings)
// before the reader fills it, and that read mapped the kernel's zero page, so the
// reader's first write to each page faulted a second time and flushed the
// TLB of the other core (~1,200 of the 19,000 page faults of a 1M-line
// mixed log).
func newBatch() *batch {
	return &batch{raw: populated(make([]string, batchLines))[:0], parsed: populated(make([]logline.Line, batchLines)),
		kind: make([]lineKind, batchLines), cmdAt: populated(make([]int32, batchLines)), hr: populated(make([]int, batchLines)),
		day: populated(make([]dayKey, batchLines)), rk: populated(make([]rejectKey, batchLines)),
		evAt: populated(make([]int32, batchLines)), ownAt: populated(make([]int32, batchLines))}
}

// lineKind is what the reader made of a line: nothing (not a syslog line),
// a parsed line (lineParsed), one that only counts as seen
// (connectionLine), whether it has a rejection key (lineRK) and whether
// it has relayguard's record parsed (lineOwn).
type lineKind uint8

const (
	lineParsed lineKind = 1 << iota
	lineOnly
	lineRK
	lineOwn // a record parsed into b.own (ownAt)
)

// chunk is a read buffer and the number of holders of its lines: the
// batches not yet counted and the reader while it fills the chunk.
type chunk struct {
	buf  []byte
	refs atomic.Int32
}

// poisonRecycled makes a recycled chunk's bytes garbage before reuse (the
// tests set it): a string the analyzer kept without copying it then shows
// in the report instead of silently holding another line's bytes.
var poisonRecycled = false

const batchLines = 2048

// batches is how many batches the pipeline holds at most: the reader makes
// them one by one as it needs them (a small log fills one or two).
const batches = 6

// chunkSize is how much of the input is read at a time.
const chunkSize = 1 << 20

// ReadLines feeds every line of r to the analyzer, with one year-inference
// state for the whole stream. Reading and timestamp parsing run in one
// goroutine and the counting in the caller's, so that two cores share the
// work; batches keep the hand-over cheap and the order intact.
//
// The input is read into 1 MiB chunks and each line is a string pointing
// into its chunk (no copy per line). The analyzer copies whatever it keeps
// (see keyIndex), so a chunk is reused once every batch with a line in it
// has been counted: a fresh chunk per MiB read cost page faults and
// collections for 125 MB of garbage per 1,000,000 lines.
func (a *Analyzer) ReadLines(r io.Reader, p *logline.Parser) error { return a.readLines(r, nil, p) }

// readMapped reads a plain file as ReadLines does, mapped into memory
// instead of read into chunks: the lines are strings into the mapping, so
// the file is neither copied by read(2) nor into buffers. The analyzer
// copies whatever it keeps (as it must with recycled chunks), and the
// mapping is removed before readMapped returns; the pages of the lines
// counted leave the resident set as the counting goes on (a page touched
// again is read back from the page cache), so peak memory does not grow
// with the file.
func (a *Analyzer) readMapped(f *os.File, p *logline.Parser) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size == 0 || int64(int(size)) != size {
		return a.ReadLines(f, p)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return a.ReadLines(f, p) // (a file system that cannot map: read it)
	}
	defer unix.Munmap(data)
	_ = unix.Madvise(data, unix.MADV_SEQUENTIAL)
	return a.readLines(nil, data, p)
}

// dropMapped is how much of a mapped file is counted before its pages are
// given back (a test makes it small).
var dropMapped = 8 << 20

// readLines reads r, or the mapped file data when data is not nil. The
// three goroutines that read a mapping (the reader, the counting and the
// client stage) each turn a fault on it into logline.ErrTruncated
// (logline.CatchFault), and readLines returns only when none of them
// reads it any more: the caller unmaps it then.
func (a *Analyzer) readLines(r io.Reader, data []byte, p *logline.Parser) (err error) {
	pool := make(chan *chunk, 8)
	release := func(c *chunk) {
		if c.refs.Add(-1) != 0 || len(c.buf) != chunkSize {
			return
		}
		if poisonRecycled {
			for i := range c.buf {
				c.buf[i] = 0xff
			}
		}
		select {
		case pool <- c:
		default:
		}
	}
	full := make(chan *batch, 4)
	free := make(chan *batch, batches) // (the reader makes them as it needs them)
	clients := make(chan *batch, 4)    // counted batches, to the client stage
	done := make(chan struct{})
	defer func() {
		close(done)
		for range full { // (the reader is gone when full is closed)
		}
	}()
	rd := &lineReader{a: a, p: p, free: free, full: full, clients: clients, done: done, domains: map[string]string{}}
	go rd.run(r, data, pool, release)
	// The client work of the abuse view (logwatch's reading of a line, the
	// pairing of failed logins and the tables by client address: a cache
	// miss or more per event on a botnet's log) is done by a third
	// goroutine, a batch behind the counting: the counting was the slower
	// half of the pipeline. It ends before readLines returns.
	stageDone := make(chan struct{})
	var stageErr error // (read once stageDone is closed)
	stage := func() (err error) {
		if data != nil {
			debug.SetPanicOnFault(true)
			defer logline.CatchFault(data, &err)
		}
		dropped := 0 // the start of data's pages still mapped in
		for b := range clients {
			a.abuse.doQueued(b)
			for _, c := range b.chunks {
				release(c)
			}
			if n := len(b.raw); data != nil && n > 0 {
				// Everything before this batch's last line is counted.
				off := int(uintptr(unsafe.Pointer(unsafe.StringData(b.raw[n-1]))) - uintptr(unsafe.Pointer(&data[0])))
				if page := os.Getpagesize(); off-dropped >= dropMapped {
					to := off / page * page
					_ = unix.Madvise(data[dropped:to], unix.MADV_DONTNEED)
					dropped = to
				}
			}
			free <- b
		}
		return nil
	}
	go func() {
		defer close(stageDone)
		if stageErr = stage(); stageErr != nil {
			for b := range clients { // (free holds every batch)
				free <- b
			}
		}
	}()
	defer func() {
		close(clients)
		<-stageDone
		if err == nil {
			err = stageErr
		}
	}()
	if data != nil {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer logline.CatchFault(data, &err)
	}
	for b := range full {
		a.abuse.batch = b
		a.lines += int64(len(b.raw)) // (nothing below reads it)
		for i := range b.raw {
			a.abuse.line = int32(i)
			k := b.kind[i]
			if k&lineOwn != 0 {
				a.preOwn = &b.own[b.ownAt[i]]
			}
			switch {
			case k&lineOnly != 0:
				if t := b.parsed[i].Time; t.IsZero() || a.inRange(t) {
					a.seen(t, b.day[i])
				}
			case k&lineParsed != 0:
				if j := b.evAt[i]; j >= 0 {
					if b.ev[j].dovecot {
						// What add does with Dovecot's line: queue its
						// abuse view's job (abuseState.logged, the batch
						// telling it whole: the slot holds its question).
						if t := b.parsed[i].Time; t.IsZero() || a.inRange(t) {
							b.jobs = append(b.jobs, queuedJob{jobLogged, int32(i), -1})
						}
						break
					}
					a.abuse.pre = &b.ev[j]
				}
				if k&lineRK != 0 {
					a.preReject = &b.rk[i]
				}
				a.add(&b.parsed[i], int(b.cmdAt[i]), b.hr[i], b.day[i])
				a.preReject, a.abuse.pre = nil, nil
			case maillog.IsRecord(b.raw[i]):
				a.addOwn(b.raw[i], time.Time{})
			}
			if k&lineOwn != 0 {
				a.preOwn = nil
			}
		}
		a.abuse.batch = nil
		err := b.err
		clients <- b
		if err != nil {
			return err
		}
	}
	return rd.fault // (set before full was closed)
}

// lineReader is the reading goroutine of readLines: it splits the input
// into lines, parses each and fills the batches the counting takes. Its
// per-line work is a method rather than a closure: the closure's dozen
// captured variables were loaded and spilled on every call (~27
// instructions a line, a tenth of a connection line's reading).
type lineReader struct {
	a     *Analyzer
	p     *logline.Parser
	b     *batch // the batch being filled (nil: none yet)
	cur   *chunk // the chunk being filled (the reader holds a reference)
	cc    clockCache
	ownCC clockCache     // (records' own times: in UTC where syslog's are local)
	mp    maillog.Parser // (records' times: most in the hour of the one before)
	eager bool           // the batch being filled parses logwatch's events (see line)
	// Rejection lines are condensed here already (procReject is a pure
	// function of the line), with a cache of client domains of its own.
	domains             map[string]string
	made                int // the batches made so far (at most batches)
	free, full, clients chan *batch
	done                chan struct{}
	fault               error // a fault on the mapping (logline.CatchFault)
}

// run reads r, or the mapped file data when data is not nil, into
// batches sent on rd.full, which it closes when done.
func (rd *lineReader) run(r io.Reader, data []byte, pool chan *chunk, release func(*chunk)) {
	defer close(rd.full)
	if data != nil {
		debug.SetPanicOnFault(true)
		defer logline.CatchFault(data, &rd.fault) // (before full is closed)
	}
	var buf []byte
	start, end, eof := 0, 0, false
	if data != nil {
		buf, end, eof = data, len(data), true
	}
	for {
		if i := bytes.IndexByte(buf[start:end], '\n'); i >= 0 {
			line := buf[start : start+i+1]
			start += i + 1
			if !rd.line(line) {
				return
			}
			continue
		}
		if eof {
			if start < end && !rd.line(buf[start:end]) {
				return
			}
			if rd.get() {
				rd.send()
			}
			if rd.cur != nil {
				release(rd.cur)
			}
			return
		}
		// Move the partial line into a fresh or recycled chunk and
		// fill the rest.
		rem := end - start
		var nc *chunk
		select {
		case nc = <-pool:
			if 2*rem > len(nc.buf) {
				nc = nil
			}
		default:
		}
		if nc == nil {
			nc = &chunk{buf: make([]byte, max(chunkSize, 2*rem))}
		}
		nc.refs.Store(1)
		nb := nc.buf
		copy(nb, buf[start:end])
		if rd.cur != nil {
			release(rd.cur)
		}
		rd.cur = nc
		n, err := io.ReadFull(r, nb[rem:])
		buf, start, end = nb, 0, rem+n
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			eof = true
		case err != nil:
			if rd.get() {
				rd.b.err = err
				rd.send()
			}
			return
		}
	}
}

// get makes sure there is a batch to fill; false: the counting is gone.
func (rd *lineReader) get() bool {
	if rd.b != nil {
		return true
	}
	var b *batch
	select {
	case b = <-rd.free:
	default:
		if rd.made < batches {
			rd.made++
			b = newBatch()
			break
		}
		select {
		case b = <-rd.free:
		case <-rd.done:
			return false
		}
	}
	// Batches wait for the counting or the client stage:
	// the reader is not the slowest stage.
	rd.eager = rd.a.parseAhead > 0 || rd.a.parseAhead == 0 && (len(rd.full) > 0 || len(rd.clients) > 0)
	b.raw, b.err = b.raw[:0], nil
	b.ev = b.ev[:0]   // (each slot is overwritten when reused)
	b.own = b.own[:0] // (each slot is overwritten when reused)
	b.chunks = b.chunks[:0]
	rd.b = b
	return true
}

// send hands the batch to the counting; false: the counting is gone.
func (rd *lineReader) send() bool {
	select {
	case rd.full <- rd.b:
		rd.b = nil
		return true
	case <-rd.done:
		return false
	}
}

// line reads one line into the batch; false: the counting is gone.
func (rd *lineReader) line(line []byte) bool {
	b := rd.b
	if b == nil { // (a call only for a batch's first line)
		if !rd.get() {
			return false
		}
		b = rd.b
	}
	i := len(b.raw)
	s := unsafe.String(unsafe.SliceData(line), len(line))
	b.raw = append(b.raw, s)
	if n := len(b.chunks); rd.cur != nil && (n == 0 || b.chunks[n-1] != rd.cur) {
		rd.cur.refs.Add(1)
		b.chunks = append(b.chunks, rd.cur)
	}
	b.evAt[i], b.ownAt[i] = -1, -1
	a := rd.a
	if maillog.IsRecord(s) {
		b.parsed[i] = logline.Line{} // relayguard's own log file: the analyzer reads it
		rd.own(b, i, s, time.Time{})
		b.kind[i] = lineOwn
	} else if !rd.p.ParseTo(&b.parsed[i], s[:len(s)-eol(s)]) { // (its loop trimming the end cost ~20 instructions a line)
		b.kind[i] = 0
	} else if l := &b.parsed[i]; l.Program == "relayguard" {
		rd.own(b, i, l.Message, l.Time)
		// (neither a connection line nor one logwatch reads;
		// addOwn counts it at its record's hour, not b.hr[i])
		b.kind[i], b.cmdAt[i] = lineParsed|lineOwn, -1
	} else {
		msg := l.Message
		b.hr[i], b.day[i] = rd.cc.clock(l.Time)
		at := a.commandAt(l.Program)
		b.cmdAt[i] = int32(at)
		if a.connectionLine(l.Program, at, msg) {
			b.kind[i] = lineOnly
			return len(b.raw) < batchLines || rd.send()
		}
		kind := lineParsed
		if strings.HasPrefix(l.Program, "postfix") || strings.HasPrefix(l.Program, a.prefix) {
			msg = stripSolarisID(msg)
			if rejectCandidate(msg) {
				o := &a.opt
				b.rk[i] = procReject(msg, o.VerboseMsgDetail, o.IgnoreCase, o.RejAddFrom, rd.dom)
				kind |= lineRK
			}
		}
		b.kind[i] = kind
		// What the counting will ask logwatch about this line
		// (abuseState.do checks that it is the same question).
		// The reader parses it when it is ahead of the counting
		// (eager), else leaves it to the client stage
		// (abuseState.do): with every line parsed here the
		// reader was the pipeline's longest stage, with none the
		// client stage was. The parse is a function of the line
		// alone, so the report is the same either way.
		if prog, ok, dov := a.abuseProgram(l.Program, at, msg, kind&lineRK != 0); ok {
			pe := b.slot(i)
			pe.program, pe.msg, pe.done = prog, msg, false
			pe.t = l.Time // (for the client stage, which reads no other part of b.parsed)
			// Dovecot's line (its question is (Program, Message)):
			// the counting queues its job without add.
			pe.dovecot = dov && len(msg) == len(l.Message)
			if rd.eager {
				pe.ok, pe.done = logwatch.ParseMessageTo(&pe.e, prog, msg), true
			}
		}
	}
	return len(b.raw) < batchLines || rd.send()
}

// eol is 1 when s ends in a newline, else 0.
func eol(s string) int {
	if len(s) > 0 && s[len(s)-1] == '\n' {
		return 1
	}
	return 0
}

// dom is gimmeDomain with the reader's own cache.
func (rd *lineReader) dom(c string) string { return domainOf(c, rd.domains, 100000) }

// own parses relayguard's own record msg (its log file, or its line in
// syslog at time syslog) into line i's slot of b.own, for addOwn. The
// record is parsed into its slot (a Record is ~600 bytes: a copy per line
// cost more than the parse of a short one); every field of a reused slot
// is overwritten.
func (rd *lineReader) own(b *batch, i int, msg string, syslog time.Time) {
	n := len(b.own)
	b.ownAt[i] = int32(n)
	if n < cap(b.own) {
		b.own = b.own[:n+1]
	} else {
		b.own = append(b.own, ownParsed{})
	}
	o := &b.own[n]
	o.raw = msg
	// (o.r, o.t, o.hr and o.day are read only when o.ok)
	if o.ok = rd.mp.ParseToUnless(&o.r, msg, uncounted); o.ok {
		if o.t = ownTime(&o.r, syslog); !o.t.IsZero() {
			o.hr, o.day = rd.ownCC.clock(o.t)
		}
	}
}

// slot returns a new slot in b.ev for logwatch's reading of line i.
func (b *batch) slot(i int) *parsed {
	n := len(b.ev)
	if n < cap(b.ev) {
		b.ev = b.ev[:n+1]
	} else {
		b.ev = append(b.ev, parsed{})
	}
	b.evAt[i] = int32(n)
	return &b.ev[n]
}

// connectionLine reports whether add would only count a line of program
// with message msg as seen: smtpd's "connect from", "disconnect from" and
// "lost connection after" lines without --smtpd-stats (two thirds of a
// botnet's log; pflogsumm reads nothing else in them, nor does the guard).
// at is commandAt(prog).
func (a *Analyzer) connectionLine(prog string, at int, msg string) bool {
	// (the cheapest tests first: most lines fail the command's or the
	// message's; the prefixes compared in pieces of at most 16 bytes,
	// which the compiler compares inline where a longer one is a call)
	if at < 0 || len(msg) < len("connect from ") || prog[at:] != "smtpd" || a.opt.SMTPDStats {
		return false
	}
	switch msg[0] {
	case 'c':
		if msg[:len("connect from ")] != "connect from " {
			return false
		}
	case 'd':
		if !strings.HasPrefix(msg, "disconnect from ") {
			return false
		}
	case 'l':
		if len(msg) < len("lost connection after ") || msg[:16] != "lost connection " || msg[16:22] != "after " {
			return false
		}
	default:
		return false
	}
	return strings.HasPrefix(prog, "postfix") || prog != "relayguard" && !logwatch.Dovecot(prog)
}

// abuseProgram is the program under which the counting (add) will have
// logwatch parse a message (stripped of a Solaris id for Postfix): Dovecot's
// lines, another Postfix instance's, smtpd's warnings (SASL failures) and
// rejections (reject says the line is one). A wrong guess costs only the
// parse: abuseState.do compares the question. at is commandAt(prog).
// dovecot says the program is Dovecot's (no "postfix" tag and
// logwatch.Dovecot): the reader asked logwatch.Dovecot again for it.
func (a *Analyzer) abuseProgram(prog string, at int, msg string, reject bool) (_ string, ok, dovecot bool) {
	if !strings.HasPrefix(prog, "postfix") {
		switch {
		case prog == "relayguard":
			return "", false, false
		case logwatch.Dovecot(prog):
			return prog, true, true
		}
	}
	if at < 0 {
		return prog, strings.HasPrefix(prog, "postfix"), false
	}
	switch cmd := prog[at:]; {
	case reject:
		return postfixProgram(cmd), true, false
	case cmd == "smtpd" && strings.HasPrefix(msg, "warning: "):
		return "postfix/smtpd", true, false
	}
	return "", false, false
}

// Open opens a log file for reading (see logline.Open: gzip and xz by
// content, "-" for standard input).
func Open(ctx context.Context, name string) (io.ReadCloser, error) { return logline.Open(ctx, name) }

// firstTime returns the time of the first parseable line of a file, to put
// files in chronological order ("maillog.1 maillog" or "maillog maillog.1"
// both work). It is zero if no line in the first 1000 has a time.
func firstTime(ctx context.Context, name string, newParser func() *logline.Parser) time.Time {
	rc, err := Open(ctx, name)
	if err != nil {
		return time.Time{}
	}
	defer rc.Close()
	p := newParser()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for i := 0; i < 1000 && sc.Scan(); i++ {
		if l, ok := p.Parse(sc.Text()); ok && !l.Time.IsZero() {
			return l.Time
		}
	}
	return time.Time{}
}

// ReadFiles reads the named files ("-" for standard input) in
// chronological order of their first lines. Each file has its own year
// inference. An error names the file.
func (a *Analyzer) ReadFiles(ctx context.Context, names []string, newParser func() *logline.Parser) error {
	type in struct {
		name string
		t    time.Time
	}
	var ins []in
	for _, n := range names {
		var t time.Time
		if n != "-" {
			fi, err := os.Stat(n)
			if err != nil {
				return err
			}
			// A named pipe (a FIFO, the /dev/fd/N of `report <(zcat
			// ...)`) can be read once: reading its first lines to order
			// it lost them to the report (968 lines of 1M, exit 0). Like
			// "-", it has no first time and is read before the files.
			if fi.Mode().IsRegular() {
				t = firstTime(ctx, n, newParser)
			}
		}
		ins = append(ins, in{n, t})
	}
	slices.SortStableFunc(ins, func(x, y in) int { return x.t.Compare(y.t) })
	for _, f := range ins {
		rc, err := Open(ctx, f.name)
		if err != nil {
			return err
		}
		if f, ok := logline.PlainFile(rc); ok {
			err = a.readMapped(f, newParser())
		} else {
			err = a.ReadLines(rc, newParser())
		}
		if err != nil {
			err = fmt.Errorf("%s: %w", logline.Name(f.name), err)
		}
		// (Close's error names the file already: a corrupt .xz)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// ReadJournalJSON reads `journalctl -o json` output (one JSON object per
// line).
func (a *Analyzer) ReadJournalJSON(r io.Reader, loc *time.Location) error {
	br := bufio.NewReaderSize(r, 256<<10)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			a.lines++
			l, _, ok := logline.ParseJournal(line, loc)
			switch {
			case ok && l.Time.IsZero(): // no __REALTIME_TIMESTAMP: not dated, not counted
			case ok && (l.Program == "relayguard" || maillog.IsRecord(l.Message)):
				a.addOwn(l.Message, l.Time)
			case ok:
				a.Add(l)
			case !json.Valid(line):
				return fmt.Errorf("journal: line %d is not JSON", n)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
	}
}

// ReadJournal runs journalctl (systemd's journal reader) with -o json and
// the given extra arguments (e.g. --since) and reads its output.
func (a *Analyzer) ReadJournal(ctx context.Context, journalctl string, args []string, loc *time.Location) error {
	if journalctl == "" {
		journalctl = "journalctl"
	}
	cmd := exec.CommandContext(ctx, journalctl, append([]string{"-o", "json", "--no-pager"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("journal: running %s: %w", journalctl, err)
	}
	rerr := a.ReadJournalJSON(out, loc)
	if rerr != nil {
		// journalctl may have more to write: with nobody reading the
		// pipe it would block, and Wait with it. Its exit on the closed
		// pipe says nothing more than rerr.
		out.Close()
		cmd.Wait()
		return rerr
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("journal: %s: %v: %s", journalctl, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
