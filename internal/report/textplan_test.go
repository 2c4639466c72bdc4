package report

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// writeNestedRef is writeNested before the text was cut into pieces (the
// reference): one walk into one writer.
func writeNestedRef(w *bufio.Writer, nodes []Node, title string, n int, quiet bool) {
	if !listTitle(w, title, len(nodes) == 0, quiet) {
		return
	}
	var walk func(nodes []Node, indent string)
	walk = func(nodes []Node, indent string) {
		for _, nd := range nodes {
			if nd.Children == nil {
				countRow(w, indent, nd.Count, nd.Key)
				continue
			}
			fmt.Fprintf(w, "%s%s", indent, nd.Key)
			if nd.Children[0].Children == nil {
				if n > 0 {
					fmt.Fprintf(w, " (top %d)", n)
				}
				fmt.Fprintf(w, " (total: %d)", nd.Count)
			}
			fmt.Fprintln(w)
			walk(nd.Children, indent+"  ")
		}
	}
	walk(nodes, "  ")
}

// randomTree makes depth levels of nodes (depth 1: leaves only) whose
// sizes straddle textRowsPiece, so that writeNested cuts runs of small
// siblings, large nodes and long leaf lists.
func randomTree(r *rand.Rand, depth int) []Node {
	sizes := []int{0, 1, 2, 7, textRowsPiece - 1, textRowsPiece, textRowsPiece + 1, 2*textRowsPiece + 5, 3 * textRowsPiece}
	if depth == 1 {
		leaves := make([]Node, sizes[r.IntN(len(sizes))])
		for i := range leaves {
			leaves[i] = Node{Key: "k" + strconv.Itoa(r.IntN(1e6)), Count: int64(r.IntN(600000))}
		}
		return leaves
	}
	var nodes []Node
	for i := range 1 + r.IntN(6) {
		c := randomTree(r, depth-1)
		if len(c) == 0 {
			continue
		}
		nd := Node{Key: "inner " + strconv.Itoa(i), Children: c}
		for _, x := range c {
			nd.Count += x.Count
		}
		nodes = append(nodes, nd)
	}
	return nodes
}

func TestWriteNestedSameAsRef(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for trial := range 60 {
		nodes := randomTree(r, 1+trial%3)
		n, quiet := []int{-1, 0, 3}[trial%3], trial%2 == 0
		var want bytes.Buffer
		w := bufio.NewWriter(&want)
		writeNestedRef(w, nodes, "Title", n, quiet)
		w.Flush()
		p := &textPlan{}
		writeNested(p, nodes, "Title", n, quiet)
		var got bytes.Buffer
		if err := p.write(&got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("trial %d (%d top nodes, %d pieces): %d bytes, want %d", trial, len(nodes), len(p.pieces), got.Len(), want.Len())
		}
	}
}

// TestTextPlanInOrder: the pieces are written in the order they were
// added, a piece written straight to the output in its turn, whatever the
// order they are rendered in.
func TestTextPlanInOrder(t *testing.T) {
	p := &textPlan{}
	var want strings.Builder
	for i := range 200 {
		if i == 150 {
			p.pieces = append(p.pieces, textPiece{out: func(w io.Writer) error { _, err := w.Write([]byte("queue\n")); return err }})
			want.WriteString("queue\n")
			continue
		}
		rows := (i * 7919) % 3000 // pieces of very different sizes
		p.add(func(w *bufio.Writer) {
			for j := range rows {
				fmt.Fprintf(w, "%d.%d\n", i, j)
			}
		})
		for j := range rows {
			fmt.Fprintf(&want, "%d.%d\n", i, j)
		}
	}
	var got bytes.Buffer
	if err := p.write(&got); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Fatalf("got %d bytes, want %d", got.Len(), want.Len())
	}
}

type failAfter struct{ n int }

var errFull = errors.New("disk full")

func (f *failAfter) Write(b []byte) (int, error) {
	if f.n -= len(b); f.n < 0 {
		return 0, errFull
	}
	return len(b), nil
}

// TestTextPlanWriteError: the first error writing out is returned, nothing
// is written after it, and the rendering stops.
func TestTextPlanWriteError(t *testing.T) {
	const pieces = 100
	p := &textPlan{}
	var rendered atomic.Int32
	p.rows(pieces*textRowsPiece, func(w *bufio.Writer, i int) {
		if i%textRowsPiece == 0 {
			rendered.Add(1)
		}
		fmt.Fprintf(w, "row %d\n", i)
	})
	if err := p.write(&failAfter{n: 1 << 20}); !errors.Is(err, errFull) {
		t.Fatalf("got %v, want %v", err, errFull)
	}
	// ~11 pieces of ~100 kB fit in 1 MB; after the error only the pieces
	// taken ahead are rendered (a buffer each, and one a worker).
	workers := runtime.GOMAXPROCS(0)
	if n, most := int(rendered.Load()), 12+(textAhead+1)*workers; most < pieces && n > most {
		t.Errorf("%d of %d pieces rendered, want at most %d", n, pieces, most)
	}
	q := &textPlan{}
	q.add(func(w *bufio.Writer) { w.WriteString("before\n") })
	q.pieces = append(q.pieces, textPiece{out: func(io.Writer) error { return errFull }})
	q.add(func(w *bufio.Writer) { w.WriteString("after\n") }) // (may be rendered, is not written)
	var out bytes.Buffer
	if err := q.write(&out); !errors.Is(err, errFull) || out.String() != "before\n" {
		t.Fatalf("got %v, %q", err, out.String())
	}
}
