package accounts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/queue"
)

// SpoolHolder holds and releases an account's mail in serve's spool.
type SpoolHolder struct{ Spool *queue.Spool }

func (h SpoolHolder) String() string { return "spool" }

// Hold implements Holder.
func (h SpoolHolder) Hold(_ context.Context, user, reason string) (int, error) {
	ids, err := queue.HoldUser(h.Spool, user, reason)
	return len(ids), err
}

// Release implements Holder: the account's held messages go back to the
// queue (those held by an operator for another reason stay).
func (h SpoolHolder) Release(_ context.Context, user string) (int, error) {
	envs, err := h.Spool.List()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range envs {
		if !e.Held || !strings.EqualFold(e.AuthUser, user) || !strings.Contains(e.HoldReason, "suspended") {
			continue
		}
		if _, err := queue.Release(h.Spool, e.ID); err != nil {
			return n, fmt.Errorf("release %s: %w", e.ID, err)
		}
		n++
	}
	return n, nil
}

// PostfixHolder holds and releases an account's mail in Postfix's queue
// with postsuper(1): the queue ids the milter, the policy service or the
// log tied to the account on this host.
type PostfixHolder struct {
	Postsuper  string   // /usr/sbin/postsuper
	ConfigDirs []string // one per Postfix instance (postsuper -c)
	Store      Store
	Host       string
	// Age is how far back queue ids are considered (Postfix's
	// maximal_queue_lifetime, 5 days, by default).
	Age time.Duration
	Now func() time.Time
}

func (h PostfixHolder) String() string { return "postfix" }

// (Compiled on first use, as every package-level expression of a package
// `relayguard report` does not use: their compiling was part of every
// command's start.)
var postsuperCount = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`(?:Placed on hold|Released from hold): (\d+) message`)
})

func (h PostfixHolder) run(ctx context.Context, flag, user string) (int, error) {
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	age := h.Age
	if age <= 0 {
		age = 5 * 24 * time.Hour
	}
	ids, err := h.Store.QueueIDs(ctx, h.Host, user, now().Add(-age))
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	total := 0
	var errs []error
	for _, dir := range h.ConfigDirs {
		// "-h -" / "-H -" read the queue ids from standard input; ids no
		// longer in the queue (delivered) are skipped.
		cmd := exec.CommandContext(ctx, h.Postsuper, "-c", dir, flag, "-")
		cmd.Stdin = strings.NewReader(strings.Join(ids, "\n") + "\n")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			errs = append(errs, fmt.Errorf("%s -c %s %s: %w: %s", h.Postsuper, dir, flag, err, strings.TrimSpace(out.String())))
			continue
		}
		if m := postsuperCount().FindStringSubmatch(out.String()); m != nil {
			n, _ := strconv.Atoi(m[1])
			total += n
		}
	}
	return total, errors.Join(errs...)
}

// Hold implements Holder (postsuper -h).
func (h PostfixHolder) Hold(ctx context.Context, user, _ string) (int, error) {
	return h.run(ctx, "-h", user)
}

// Release implements Holder (postsuper -H).
func (h PostfixHolder) Release(ctx context.Context, user string) (int, error) {
	return h.run(ctx, "-H", user)
}
