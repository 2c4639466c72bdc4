package report

import (
	"bufio"
	"bytes"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// textRowsPiece is the number of table rows rendered as one piece of the
// text report (textPlan): a botnet's log has 260,000 rows, in two tables
// for the most part, and pieces of this size keep both cores busy to the
// end.
const textRowsPiece = 8192

// textPlan is the text report cut into pieces, in order, that are rendered
// on every core at once, each into a buffer of its own, and written out in
// order as they are done: the text is made after the summary, when the
// reading is over, and its time (tens of milliseconds on a botnet's log)
// added in full to the report's wall time when one goroutine wrote it.
type textPlan struct {
	pieces []textPiece
}

// textPiece renders into its buffer, or (out != nil) is written straight
// to the output in its turn (the mail queue, which runs a command).
type textPiece struct {
	render func(w *bufio.Writer)
	out    func(io.Writer) error
}

// add appends a piece rendered by f.
func (p *textPlan) add(f func(w *bufio.Writer)) {
	p.pieces = append(p.pieces, textPiece{render: f})
}

// rows appends pieces that render rows [0, n) by row(w, i), textRowsPiece
// rows each.
func (p *textPlan) rows(n int, row func(w *bufio.Writer, i int)) {
	for start := 0; start < n; start += textRowsPiece {
		end := min(start+textRowsPiece, n)
		p.add(func(w *bufio.Writer) {
			for i := start; i < end; i++ {
				row(w, i)
			}
		})
	}
}

// textAhead is the number of pieces rendered and not written yet at most,
// per core: their buffers are reused (the text of a botnet's log is ~10
// MB; buffers made for all of it would be garbage enough to start a
// collection, which marks the whole of the analyzer's heap).
const textAhead = 2

// write renders the pieces and writes them to out in order. The first
// error writing to out ends it (the pieces being rendered are finished and
// dropped).
func (p *textPlan) write(out io.Writer) error {
	n := len(p.pieces)
	workers := min(runtime.GOMAXPROCS(0), n)
	bufs := make([]*bytes.Buffer, n)
	done := make([]chan struct{}, n)
	for i := range done {
		done[i] = make(chan struct{})
	}
	// A worker takes a buffer before a piece's number, so the pieces that
	// hold buffers are the first ones not written yet: the lowest of them
	// is always being rendered, or done, and is written next.
	free := make(chan *bytes.Buffer, textAhead*workers)
	for range cap(free) {
		free <- new(bytes.Buffer)
	}
	var next atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	for range workers {
		wg.Go(func() {
			w := bufio.NewWriterSize(nil, 64<<10)
			for {
				var b *bytes.Buffer
				select {
				case b = <-free:
				case <-stop:
					return
				}
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if f := p.pieces[i].render; f != nil {
					b.Reset()
					w.Reset(b)
					f(w)
					w.Flush() // (to a bytes.Buffer: no error)
				}
				bufs[i] = b
				close(done[i])
			}
		})
	}
	for i := range n {
		<-done[i]
		if f := p.pieces[i].out; f != nil {
			if err := f(out); err != nil {
				return err
			}
		} else if _, err := out.Write(bufs[i].Bytes()); err != nil {
			return err
		}
		free <- bufs[i]
	}
	return nil
}
