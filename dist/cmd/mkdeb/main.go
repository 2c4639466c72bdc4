// Command mkdeb builds relayguard's Debian package from this repository with
// Go's toolchain alone: it builds the binary, has that binary write its
// manual pages, shell completions and the Debian default configuration
// (`relayguard gen-docs`, `relayguard config print`), writes the copyright
// and changelog files, and packs them with the files of dist/ through nfpm
// (`go tool nfpm`, a tool of this module, on dist/nfpm.yaml).
//
//	go run ./dist/cmd/mkdeb [-o DIR] [-arch GOARCH]
//
// It prints the path of the package it wrote.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/version"
)

// Paths the package and the binary built for it agree on.
const (
	configFile = "/etc/relayguard/relayguard.toml"
	modulePath = "github.com/relayguard/relayguard"
	maintainer = "relayguard maintainers <relayguard@users.noreply.github.com>"
)

// options of one build.
type options struct {
	root   string // the repository (module) root
	outDir string // where the .deb goes
	goarch string
	log    func(format string, args ...any)
}

func main() {
	var o options
	flag.StringVar(&o.outDir, "o", ".", "write the package into `DIR`")
	flag.StringVar(&o.goarch, "arch", runtime.GOARCH, "target `GOARCH` (amd64, arm64, 386, arm)")
	flag.Parse()
	o.log = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "mkdeb: "+format+"\n", args...) }
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
	o.root = root
	deb, err := build(context.Background(), o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
	fmt.Println(deb)
}

// moduleRoot is the directory of relayguard's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside relayguard's module (go env GOMOD is empty)")
	}
	return filepath.Dir(gomod), nil
}

// debArch maps GOARCH to Debian's architecture names.
func debArch(goarch string) (string, error) {
	switch goarch {
	case "amd64", "arm64", "ppc64le", "s390x", "riscv64":
		return goarch, nil
	case "386":
		return "i386", nil
	case "arm":
		return "armhf", nil
	}
	return "", fmt.Errorf("GOARCH %q: no Debian architecture known", goarch)
}

// build writes the package into o.outDir and returns its path.
func build(ctx context.Context, o options) (string, error) {
	arch, err := debArch(o.goarch)
	if err != nil {
		return "", err
	}
	stage, err := os.MkdirTemp("", "relayguard-deb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(stage)

	stamp := gitStamp(ctx, o.root)
	ldflags := "-s -w -X main.defaultConfigFile=" + configFile
	if stamp.commit != "" {
		v := modulePath + "/internal/version."
		ldflags += " -X " + v + "stampVersion=" + stamp.version +
			" -X " + v + "stampCommit=" + stamp.commit +
			" -X " + v + "stampTime=" + stamp.time.Format(time.RFC3339)
	}
	bin := filepath.Join(stage, "relayguard")
	if err := goBuild(ctx, o.root, o.goarch, ldflags, bin); err != nil {
		return "", err
	}
	// The packaged binary writes the documentation; a cross-built one
	// cannot run here, so a native twin does.
	tool := bin
	if o.goarch != runtime.GOARCH {
		tool = filepath.Join(stage, "relayguard-native")
		if err := goBuild(ctx, o.root, runtime.GOARCH, ldflags, tool); err != nil {
			return "", err
		}
		defer os.Remove(tool)
	}
	var info version.Info
	out, err := command(ctx, o.root, tool, "version", "--json")
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("relayguard version --json: %w", err)
	}
	debVersion := DebVersion(info.Version)
	o.log("relayguard %s (commit %s) as %s_%s", info.Version, orUnknown(info.Commit), debVersion, arch)

	if _, err := command(ctx, o.root, tool, "gen-docs",
		"--man", filepath.Join(stage, "man"), "--completions", filepath.Join(stage, "completions")); err != nil {
		return "", err
	}
	pages, err := filepath.Glob(filepath.Join(stage, "man", "*.[58]"))
	if err != nil {
		return "", err
	}
	for _, p := range pages {
		if err := gzipFile(p); err != nil {
			return "", err
		}
	}
	conf, err := command(ctx, o.root, tool, "config", "print", "--config", filepath.Join(o.root, "dist", "debian", "relayguard.toml"))
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(stage, "relayguard.toml"), conf, 0o640); err != nil {
		return "", err
	}
	date := info.Time
	if date.IsZero() {
		date = time.Now()
	}
	if err := writeChangelog(filepath.Join(stage, "changelog.Debian.gz"), debVersion, info, date); err != nil {
		return "", err
	}
	if err := writeCopyright(filepath.Join(stage, "copyright"), bin, date.Year()); err != nil {
		return "", err
	}

	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return "", err
	}
	target, err := filepath.Abs(filepath.Join(o.outDir, fmt.Sprintf("relayguard_%s_%s.deb", debVersion, arch)))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "tool", "nfpm", "package",
		"--config", filepath.Join("dist", "nfpm.yaml"), "--packager", "deb", "--target", target)
	cmd.Dir = o.root
	cmd.Env = append(os.Environ(),
		"RELAYGUARD_STAGE="+stage,
		"RELAYGUARD_ARCH="+arch,
		"RELAYGUARD_DEB_VERSION="+debVersion,
		"SOURCE_DATE_EPOCH="+strconv.FormatInt(date.Unix(), 10))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go tool nfpm: %w\n%s", err, out)
	}
	return target, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// goBuild builds cmd/relayguard statically (no libc dependency) for goarch.
func goBuild(ctx context.Context, root, goarch, ldflags, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-buildvcs=auto", "-ldflags", ldflags, "-o", out, "./cmd/relayguard")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build (GOARCH=%s): %w\n%s", goarch, err, b)
	}
	return nil
}

// command runs a program in dir and returns its standard output; the error
// names the command and carries its standard error.
func command(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

// gzipFile replaces path by path.gz, compressed as Debian wants it: best
// compression, no name and no timestamp in the header (gzip -9n).
func gzipFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path+".gz", gzipBytes(b), 0o644); err != nil {
		return err
	}
	return os.Remove(path)
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// DebVersion turns a Go module version into a Debian version that sorts the
// same way: v1.2.3 is 1.2.3-1; a pre-release or pseudo-version
// (v0.0.0-20260102150405-abcdef123456) sorts before its release, which "~"
// does in Debian (0.0.0~20260102150405.abcdef123456-1); "+dirty" stays.
// "(devel)", a build nothing identifies, becomes 0.0.0~~devel-1, older than any.
func DebVersion(goVersion string) string {
	v := strings.TrimPrefix(goVersion, "v")
	if v == "" || v == "(devel)" {
		return "0.0.0~~devel-1"
	}
	base, pre, hasPre := strings.Cut(v, "-")
	if hasPre {
		v = base + "~" + strings.ReplaceAll(pre, "-", ".")
	}
	return v + "-1"
}

// writeChangelog writes a one-entry changelog.Debian.gz (Debian policy
// 4.4: every binary package has one).
func writeChangelog(path, debVersion string, info version.Info, date time.Time) error {
	var b strings.Builder
	fmt.Fprintf(&b, "relayguard (%s) unstable; urgency=medium\n\n", debVersion)
	fmt.Fprintf(&b, "  * Built by dist/cmd/mkdeb from relayguard\n    %s", info.Version)
	if info.Commit != "" {
		fmt.Fprintf(&b, ",\n    commit %s", info.Commit)
	}
	fmt.Fprintf(&b, ".\n\n -- %s  %s\n", maintainer, date.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	return os.WriteFile(path, gzipBytes([]byte(b.String())), 0o644)
}

// writeCopyright writes /usr/share/doc/relayguard/copyright, naming the Go
// modules linked into the binary (read from its build information).
func writeCopyright(path, bin string, year int) error {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("build information of %s: %w", bin, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `relayguard

Upstream: https://github.com/relayguard/relayguard
Copyright %d the relayguard authors.
License: the repository declares no license yet; see the upstream
repository for the terms under which it is distributed.

The binary /usr/sbin/relayguard is statically linked with the Go standard
library (Copyright The Go Authors, under a BSD-3-Clause license) and with
these Go modules, each under the license in its source at the version shown:

`, year)
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		fmt.Fprintf(&b, "  %s %s\n", d.Path, d.Version)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
