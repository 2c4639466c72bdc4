package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/safeio"
)

// The --fix changes to relayguard.toml are made line by line: go-toml (and
// every other Go TOML library) drops comments and reorders keys when it
// writes a document back, and an operator's configuration is mostly
// comments. The edits are deliberately narrow: replace the value of one
// key (a scalar, or an array that may span lines) in one table, or add
// the key to that table. The result must load as a valid configuration
// before it replaces the file (atomically, the old one kept as .bak).

// tomlEdit sets key to value (TOML syntax) in table: "" for the top
// level, "auth" for [auth], "listener#1" for the second [[listener]].
type tomlEdit struct {
	Table, Key, Value string
}

// header returns the table a line opens, or ok=false.
func header(line string) (name string, array bool, ok bool) {
	t := strings.TrimSpace(line)
	if i := strings.Index(t, "#"); i >= 0 && !strings.HasPrefix(t, "#") {
		t = strings.TrimSpace(t[:i])
	}
	switch {
	case strings.HasPrefix(t, "[[") && strings.HasSuffix(t, "]]"):
		return strings.TrimSpace(t[2 : len(t)-2]), true, true
	case strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]"):
		return strings.TrimSpace(t[1 : len(t)-1]), false, true
	}
	return "", false, false
}

// applyTOML applies the edits to a document.
func applyTOML(doc string, edits []tomlEdit) (string, error) {
	lines := strings.Split(doc, "\n")
	for _, e := range edits {
		var err error
		if lines, err = applyOne(lines, e); err != nil {
			return "", err
		}
	}
	return strings.Join(lines, "\n"), nil
}

func applyOne(lines []string, e tomlEdit) ([]string, error) {
	want, index := e.Table, 0
	if name, n, ok := strings.Cut(e.Table, "#"); ok {
		want = name
		if _, err := fmt.Sscan(n, &index); err != nil {
			return nil, fmt.Errorf("table %q: bad index", e.Table)
		}
	}
	// Find the table's lines: [start, end).
	start, end := -1, len(lines)
	if want == "" {
		start = 0
	}
	seen := 0
	for i, l := range lines {
		name, _, ok := header(l)
		if !ok {
			continue
		}
		if start >= 0 { // the next header ends the table
			end = i
			break
		}
		if name == want {
			if seen == index {
				start = i + 1
			}
			seen++
		}
	}
	line := e.Key + " = " + e.Value
	if start < 0 {
		if strings.Contains(e.Table, "#") {
			return nil, fmt.Errorf("no table [[%s]] number %d in the configuration", want, index+1)
		}
		return append(lines, "", "["+want+"]", line), nil
	}
	for i := start; i < end; i++ {
		k, _, ok := strings.Cut(lines[i], "=")
		if !ok || strings.TrimSpace(k) != e.Key || strings.HasPrefix(strings.TrimSpace(lines[i]), "#") {
			continue
		}
		// The old value may be an array spanning lines.
		last := i
		if v := strings.TrimSpace(lines[i][len(k)+1:]); strings.HasPrefix(v, "[") && strings.Count(v, "[") > strings.Count(v, "]") {
			depth := strings.Count(v, "[") - strings.Count(v, "]")
			for last = i + 1; last < end && depth > 0; last++ {
				depth += strings.Count(lines[last], "[") - strings.Count(lines[last], "]")
			}
			last--
		}
		out := append([]string{}, lines[:i]...)
		out = append(out, line)
		return append(out, lines[last+1:]...), nil
	}
	out := append([]string{}, lines[:start]...)
	out = append(out, line)
	return append(out, lines[start:]...), nil
}

// configRemedy edits relayguard's configuration file; nil when relayguard
// runs on its embedded configuration (there is no file to fix: the
// defaults are what the audit found). The first change of a run keeps the
// file as it was in FILE.bak.
func (r *run) configRemedy(path, show string, edits ...tomlEdit) *Remedy {
	if path == "" {
		return nil
	}
	var keys []string
	for _, e := range edits {
		keys = append(keys, e.Table+"."+e.Key)
	}
	return &Remedy{Key: "relayguard:" + path + ":" + strings.Join(keys, ","), Show: show + " in " + path, Apply: func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		doc, err := applyTOML(string(b), edits)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		// The edited file must be a valid configuration before it
		// replaces the old one.
		tmp, err := os.CreateTemp(filepath.Dir(path), ".audit-check-*.toml")
		if err != nil {
			return err
		}
		tmp.WriteString(doc)
		tmp.Close()
		defer os.Remove(tmp.Name())
		c, err := config.Load(tmp.Name())
		if err == nil {
			err = c.Finish("")
		}
		if err != nil {
			return fmt.Errorf("%s: the edited configuration would not load, left unchanged: %w", path, err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		if _, done := r.backedUp.LoadOrStore(path, true); !done {
			if err := safeio.WriteFile(path+".bak", b, fi.Mode().Perm()); err != nil {
				return err
			}
		}
		return safeio.WriteFile(path, []byte(doc), fi.Mode().Perm())
	}}
}
