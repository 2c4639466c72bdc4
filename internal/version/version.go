// Package version says which relayguard a binary is: the main module's
// version and the commit it was built from, as the go command stamped them
// into the binary (runtime/debug.ReadBuildInfo), so that a bug report, a log
// and a Debian package all name exactly what runs.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Info is what the binary knows about its own build.
type Info struct {
	// Module is the main module's path.
	Module string `json:"module"`
	// Version is a release tag (v1.2.3), a pseudo-version
	// (v0.0.0-20260102150405-abcdef123456, "+dirty" when built from a tree
	// with uncommitted changes) or "(devel)" when nothing better is known.
	Version string `json:"version"`
	// Commit is the full revision, "" when unknown.
	Commit string `json:"commit,omitempty"`
	// Time is the commit's time, zero when unknown.
	Time time.Time `json:"commit_time,omitzero"`
	// Modified is true when the tree had uncommitted changes.
	Modified bool `json:"modified"`
	// Go is the toolchain that built the binary.
	Go string `json:"go"`
	// Platform is GOOS/GOARCH.
	Platform string `json:"platform"`
}

// Set with -ldflags -X by dist/cmd/mkdeb when the go command cannot stamp
// VCS information itself: it looks for a .git directory at the module root,
// which a git worktree (where .git is a file) or a source tarball lacks. The
// go command's own stamp wins whenever it exists.
var (
	stampVersion string
	stampCommit  string
	stampTime    string // RFC 3339
)

// Get returns the running binary's Info.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return FromBuildInfo(bi)
}

// FromBuildInfo reads an Info from build information (nil gives what the
// linker stamps alone provide).
func FromBuildInfo(bi *debug.BuildInfo) Info {
	info := Info{Version: "(devel)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		info.Module = bi.Main.Path
		if bi.Main.Version != "" {
			info.Version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			info.Go = bi.GoVersion
		}
		var goos, goarch string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Commit = s.Value
			case "vcs.time":
				info.Time, _ = time.Parse(time.RFC3339, s.Value)
			case "vcs.modified":
				info.Modified = s.Value == "true"
			case "GOOS":
				goos = s.Value
			case "GOARCH":
				goarch = s.Value
			}
		}
		if goos != "" && goarch != "" {
			info.Platform = goos + "/" + goarch
		}
	}
	if info.Commit == "" && stampCommit != "" {
		info.Commit = stampCommit
		info.Time, _ = time.Parse(time.RFC3339, stampTime)
		info.Modified = strings.HasSuffix(stampVersion, "+dirty")
	}
	if info.Version == "(devel)" && stampVersion != "" {
		info.Version = stampVersion
	}
	return info
}

// String is the human-readable report of `relayguard version`: the version
// on the first line, then the commit and the toolchain.
func (i Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "relayguard %s\n", i.Version)
	switch {
	case i.Commit == "":
		b.WriteString("commit unknown (built without version control information)\n")
	default:
		fmt.Fprintf(&b, "commit %s", i.Commit)
		if !i.Time.IsZero() {
			fmt.Fprintf(&b, " (%s)", i.Time.UTC().Format(time.RFC3339))
		}
		if i.Modified {
			b.WriteString(", with uncommitted changes")
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "built with %s for %s\n", i.Go, i.Platform)
	return b.String()
}
