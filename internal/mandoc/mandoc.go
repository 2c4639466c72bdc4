// Package mandoc writes relayguard's manual pages: relayguard(8) and one
// page per subcommand from the cobra command tree (through cobra/doc), and
// relayguard.toml(5) from the configuration schema's comments. The Debian
// package installs what `relayguard gen-docs` writes with it.
package mandoc

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

const manual = "relayguard Manual"

// Header is what every page's .TH line says besides its name.
type Header struct {
	Version string    // shown as "relayguard VERSION"
	Date    time.Time // the source's date (the commit's time), not the build's
}

func (h Header) date() string {
	d := h.Date
	if d.IsZero() {
		d = time.Now()
	}
	return d.UTC().Format("January 2006")
}

// Commands writes NAME.8 into dir for root and for every available
// subcommand below it (relayguard.8, relayguard-serve.8,
// relayguard-user-add.8, …). files is roff appended to the root page (its
// FILES section), "" for none. It returns the names of the files written.
func Commands(root *cobra.Command, dir string, h Header, files string) ([]string, error) {
	var written []string
	var walk func(c *cobra.Command) error
	walk = func(c *cobra.Command) error {
		for _, sub := range c.Commands() {
			if !sub.IsAvailableCommand() || sub.IsAdditionalHelpTopicCommand() {
				continue
			}
			if err := walk(sub); err != nil {
				return err
			}
		}
		page, err := commandPage(c, h)
		if err != nil {
			return err
		}
		if c == root && files != "" {
			page = append(page, files...)
		}
		name := strings.ReplaceAll(c.CommandPath(), " ", "-") + ".8"
		if err := os.WriteFile(filepath.Join(dir, name), page, 0o644); err != nil {
			return fmt.Errorf("mandoc: %w", err)
		}
		written = append(written, name)
		return nil
	}
	return written, walk(root)
}

// commandPage renders one command's page with cobra/doc. Its long
// description is plain text wrapped by hand; cobra/doc reads it as Markdown,
// so it is made Markdown-safe first.
func commandPage(c *cobra.Command, h Header) ([]byte, error) {
	long, autoGen := c.Long, c.DisableAutoGenTag
	defer func() { c.Long, c.DisableAutoGenTag = long, autoGen }()
	c.Long = markdownSafe(long)
	c.DisableAutoGenTag = true
	d := h.Date
	if d.IsZero() {
		d = time.Now()
	}
	var buf bytes.Buffer
	err := doc.GenMan(c, &doc.GenManHeader{
		Title:   strings.ToUpper(strings.ReplaceAll(c.CommandPath(), " ", "-")),
		Section: "8",
		Date:    &d,
		Source:  "relayguard " + h.Version,
		Manual:  manual,
	}, &buf)
	if err != nil {
		return nil, fmt.Errorf("mandoc: %s: %w", c.CommandPath(), err)
	}
	return buf.Bytes(), nil
}

// markdownSpecial are the characters Markdown could read as markup in a
// command's plain-text description.
// (Compiled on first use, as every package-level expression of a package
// `relayguard report` does not use: their compiling was part of every
// command's start.)
var markdownSpecial = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile("([\\\\`*_\\[\\]<>#|])") })

// markdownSafe turns a hand-wrapped plain-text description into Markdown
// that renders as written: paragraphs stay paragraphs, indented lines (a
// main.cf excerpt, a list of options) become literal blocks, and characters
// such as "_" in check_policy_service stay characters.
func markdownSafe(s string) string {
	var out []string
	inBlock := false
	for _, line := range strings.Split(s, "\n") {
		indented := strings.TrimSpace(line) != "" && (line[0] == ' ' || line[0] == '\t')
		switch {
		case indented && !inBlock:
			out = append(out, "", "    "+line)
			inBlock = true
		case indented:
			out = append(out, "    "+line)
		default:
			if inBlock {
				out = append(out, "")
				inBlock = false
			}
			out = append(out, markdownSpecial().ReplaceAllString(line, `\$1`))
		}
	}
	return strings.Join(out, "\n")
}

// escape makes text safe inside a roff text line.
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// escapeLines escapes every line of a block.
func escapeLines(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = escape(l)
	}
	return strings.Join(lines, "\n") + "\n"
}

// quote makes s one roff macro argument.
func quote(s string) string {
	return `"` + strings.ReplaceAll(escape(s), `"`, `""`) + `"`
}
