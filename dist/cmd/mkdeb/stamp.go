package main

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// stamp is what git says of the tree being packaged. The go command stamps
// the same into the binary by itself when the module root holds a .git
// directory; in a git worktree (.git is a file) it cannot, and mkdeb passes
// this instead (internal/version prefers the go command's own stamp).
type stamp struct {
	version string // as the go command would write it
	commit  string
	time    time.Time
}

// gitStamp returns the stamp of the tree at root, or a zero stamp when it
// is not a git checkout.
func gitStamp(ctx context.Context, root string) stamp {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	commit, err := git("rev-parse", "HEAD")
	if err != nil || len(commit) < 12 {
		return stamp{}
	}
	ct, err := git("show", "-s", "--format=%ct", "HEAD")
	if err != nil {
		return stamp{}
	}
	secs, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return stamp{}
	}
	s := stamp{commit: commit, time: time.Unix(secs, 0).UTC()}
	status, err := git("status", "--porcelain")
	dirty := err != nil || status != ""
	// A release tag on the commit names it; otherwise a pseudo-version
	// (https://go.dev/ref/mod#pseudo-versions) made of the commit's time
	// and hash.
	if tag, err := git("describe", "--tags", "--exact-match", "--match", "v[0-9]*", "HEAD"); err == nil && tag != "" {
		s.version = tag
	} else {
		s.version = "v0.0.0-" + s.time.Format("20060102150405") + "-" + commit[:12]
	}
	if dirty {
		s.version += "+dirty"
	}
	return s
}
