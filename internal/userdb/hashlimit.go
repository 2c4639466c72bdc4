package userdb

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sync/semaphore"
)

// Verifying a password hash holds memory: argon2id holds its m parameter
// (19 MiB for relayguard's hashes) for the whole verification, and a burst
// of concurrent logins multiplied it (issue 12 item 2: 100 concurrent
// wrong-password AUTHs took the process from 0.4 GB to 1.95 GB). Every
// verification therefore takes its memory from a budget first (a weighted
// semaphore, in KiB); when the budget is used up the login waits for its
// turn — it is delayed, never failed.

// hashBudgetKiB is the memory budget for concurrent verifications:
// Options.HashMemory, or by default 1/32 of the machine's memory (or of the
// cgroup's limit), but no more than one verification per CPU (argon2id
// with p=1 keeps one CPU busy: more at once only hold more memory, and the
// garbage collector lets the heap grow to about twice what is live — with
// two per CPU, 1,000 concurrent attempts peaked at 317 MB on 2 CPUs, with
// one at 210 MB; docs/benchmarks/auth.md), and at least one.
func hashBudgetKiB(configured int64) int64 {
	if configured > 0 {
		return max(configured>>10, 1)
	}
	b := int64(runtime.GOMAXPROCS(0)) * argonMemoryKiB
	if m := physicalMemory(); m > 0 {
		b = min(b, m>>10/32)
	}
	return max(b, argonMemoryKiB)
}

// physicalMemory is the memory available to the process in bytes: the
// cgroup v2 limit when there is one, else MemTotal; 0 when unknown.
func physicalMemory() int64 {
	var total int64
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				total = kb << 10
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 && (total == 0 || n < total) {
			total = n
		}
	}
	return total
}

// hashWeightKiB is the memory one verification of encoded holds, in KiB.
// bcrypt holds little memory but as much CPU as an argon2id verification,
// so it takes the weight of one of those.
func hashWeightKiB(encoded string) int64 {
	if hashScheme(encoded) == Argon2id {
		if h, err := parseArgon2id(encoded); err == nil {
			return int64(h.memory)
		}
	}
	return argonMemoryKiB
}

// hashLimiter bounds the memory of concurrent verifications.
type hashLimiter struct {
	sem    *semaphore.Weighted
	budget int64 // KiB
}

func newHashLimiter(configured int64) *hashLimiter {
	b := hashBudgetKiB(configured)
	return &hashLimiter{sem: semaphore.NewWeighted(b), budget: b}
}

// verify checks password against encoded within the budget, waiting for
// its turn. It fails only when ctx ends while waiting.
func (l *hashLimiter) verify(ctx context.Context, encoded string, password []byte) (bool, error) {
	w := min(hashWeightKiB(encoded), l.budget) // a hash bigger than the budget runs alone
	if err := l.sem.Acquire(ctx, w); err != nil {
		return false, fmt.Errorf("userdb: waiting for a password verification slot: %w", err)
	}
	defer l.sem.Release(w)
	return verifyHash(encoded, password)
}
