// Command genlog writes a synthetic Postfix log for the report benchmark.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/relayguard/relayguard/internal/report/loggen"
)

func main() {
	lines := flag.Int("lines", 1000000, "number of lines")
	seed := flag.Uint64("seed", 1, "random seed")
	abuse := flag.Bool("abuse", false, "also write Dovecot and relayguard lines")
	days := flag.Int("days", 3, "start this many days before now")
	flag.Parse()
	start := time.Now().AddDate(0, 0, -*days).Truncate(24 * time.Hour)
	if err := loggen.Write(os.Stdout, loggen.Options{Lines: *lines, Start: start, Seed: *seed, Abuse: *abuse}); err != nil {
		fmt.Fprintln(os.Stderr, "genlog:", err)
		os.Exit(1)
	}
}
