// Command genlog writes a synthetic mail log for the report and guard
// benchmarks, in one of internal/report/loggen's shapes.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/report/loggen"
)

func main() {
	lines := flag.Int("lines", 1000000, "number of lines")
	seed := flag.Uint64("seed", 1, "random seed")
	abuse := flag.Bool("abuse", false, "also write Dovecot and relayguard lines (shape mail)")
	shape := flag.String("shape", loggen.ShapeMail, "workload: "+strings.Join(loggen.Shapes, ", "))
	days := flag.Int("days", 3, "start this many days before now")
	failing := flag.String("failing", "", "write the distinct addresses that failed to authenticate to this file")
	flag.Parse()
	start := time.Now().AddDate(0, 0, -*days).Truncate(24 * time.Hour)
	o := loggen.Options{Lines: *lines, Start: start, Seed: *seed, Abuse: *abuse, Shape: *shape}
	seen := map[netip.Addr]bool{}
	if *failing != "" {
		o.OnAuthFailure = func(a netip.Addr) { seen[a] = true }
	}
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	if err := loggen.Write(out, o); err != nil {
		fmt.Fprintln(os.Stderr, "genlog:", err)
		os.Exit(1)
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "genlog:", err)
		os.Exit(1)
	}
	if *failing != "" {
		f, err := os.Create(*failing)
		if err != nil {
			fmt.Fprintln(os.Stderr, "genlog:", err)
			os.Exit(1)
		}
		w := bufio.NewWriter(f)
		for a := range seen {
			fmt.Fprintln(w, a)
		}
		if err := w.Flush(); err != nil {
			fmt.Fprintln(os.Stderr, "genlog:", err)
			os.Exit(1)
		}
		f.Close()
	}
}
