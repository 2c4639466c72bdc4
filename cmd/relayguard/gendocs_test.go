package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/cobra"
)

// needMan returns the path of man(1), failing under CI and skipping
// elsewhere when it is missing.
func needMan(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("man")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("man (man-db) is not installed")
		}
		t.Skip("man (man-db) is not installed")
	}
	return p
}

// renderMan renders a page with man -l as lintian checks it and returns the
// text; any warning of groff or man fails the test.
func renderMan(t *testing.T, page string) string {
	t.Helper()
	cmd := exec.Command(needMan(t), "--warnings", "-E", "UTF-8", "--nh", "--nj", "-l", "-Tutf8", page)
	cmd.Env = append(os.Environ(), "MANWIDTH=100", "MAN_KEEP_FORMATTING=", "LC_ALL=C.UTF-8", "MANPAGER=cat", "PAGER=cat")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("man -l %s: %v\n%s", filepath.Base(page), err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("man -l %s warns:\n%s", filepath.Base(page), stderr.String())
	}
	// Strip overstrike bold/underline that some man setups keep.
	return regexp.MustCompile(".\x08").ReplaceAllString(string(out), "")
}

// TestGenDocsManPages: gen-docs writes one page per available command
// (relayguard.8, relayguard-user-add.8, …) and nothing else, every page
// renders with man -l without a groff warning, and each says what its
// command's help says.
func TestGenDocsManPages(t *testing.T) {
	t.Parallel()
	needMan(t)
	bin := testBinary(t)
	dir := t.TempDir()
	run(t, bin, "gen-docs", "--man", dir)

	// The binary adds cobra's completion command when it runs; so does this.
	rootCmd.InitDefaultCompletionCmd()
	want := map[string]*cobra.Command{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		want[strings.ReplaceAll(c.CommandPath(), " ", "-")+".8"] = c
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() && !sub.IsAdditionalHelpTopicCommand() {
				walk(sub)
			}
		}
	}
	walk(rootCmd)
	for _, must := range []string{"relayguard.8", "relayguard-serve.8", "relayguard-policy.8", "relayguard-watch.8", "relayguard-version.8", "relayguard-user-add.8"} {
		if want[must] == nil {
			t.Errorf("command tree has no %s", must)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, e := range entries {
		got[e.Name()] = true
		if e.Name() != "relayguard.toml.5" && want[e.Name()] == nil {
			t.Errorf("gen-docs wrote %s, which is no available command (hidden gen-docs must have no page)", e.Name())
		}
	}
	for name, c := range want {
		if !got[name] {
			t.Errorf("no page %s for %q", name, c.CommandPath())
			continue
		}
		text := strings.Join(strings.Fields(renderMan(t, filepath.Join(dir, name))), " ")
		if short := strings.Join(strings.Fields(c.Short), " "); !strings.Contains(text, short) {
			t.Errorf("%s does not contain its command's summary %q:\n%s", name, short, text)
		}
		for _, f := range []string{"--config", "--data-dir"} {
			if !strings.Contains(text, f) {
				t.Errorf("%s does not document %s", name, f)
			}
		}
	}
	root := strings.Join(strings.Fields(renderMan(t, filepath.Join(dir, "relayguard.8"))), " ")
	for _, s := range []string{"FILES", "/etc/relayguard/relayguard.toml", "/var/lib/relayguard", "relayguard.toml(5)", "relayguard-serve(8)"} {
		if !strings.Contains(root, s) {
			t.Errorf("relayguard(8) does not mention %q", s)
		}
	}
	// Markup in a plain-text description stays text: the main.cf excerpt of
	// policy keeps its underscores and its line breaks.
	policy := renderMan(t, filepath.Join(dir, "relayguard-policy.8"))
	if !regexp.MustCompile(`(?m)^\s+smtpd_policy_service_default_action = 451 4\.3\.5 Server configuration problem$`).MatchString(policy) {
		t.Errorf("relayguard-policy(8) lost the main.cf excerpt's layout:\n%s", policy)
	}
}

// roffKeys reads the documented keys of relayguard.toml(5): section paths
// (from .SS headings) and dotted key paths (from .TP/.B entries), and the
// sections documented as free-form tables (maps).
func roffKeys(page string) (keys, sections, maps map[string]bool) {
	keys, sections, maps = map[string]bool{}, map[string]bool{}, map[string]bool{}
	section := ""
	lines := strings.Split(page, "\n")
	for i, l := range lines {
		if h, ok := strings.CutPrefix(l, ".SS "); ok {
			section = strings.Trim(h, `"[]`)
			sections[section] = true
		}
		if strings.HasPrefix(l, "A table of ") {
			maps[section] = true
		}
		if l == ".TP" && i+1 < len(lines) && strings.HasPrefix(lines[i+1], ".B ") {
			k := strings.ReplaceAll(strings.TrimPrefix(lines[i+1], ".B "), `\-`, "-")
			if section != "" {
				k = section + "." + k
			}
			keys[k] = true
		}
	}
	return keys, sections, maps
}

// tomlKeys walks a parsed TOML document into the same shape as roffKeys.
func tomlKeys(doc map[string]any, prefix string, keys, sections map[string]bool) {
	for k, v := range doc {
		path := prefix + k
		switch v := v.(type) {
		case map[string]any:
			sections[path] = true
			tomlKeys(v, path+".", keys, sections)
		case []any:
			if len(v) > 0 {
				if _, ok := v[0].(map[string]any); ok {
					sections[path] = true
					for _, e := range v {
						tomlKeys(e.(map[string]any), path+".", keys, sections)
					}
					continue
				}
			}
			keys[path] = true
		default:
			keys[path] = true
		}
	}
}

// TestGenDocsConfigPage: relayguard.toml(5) documents exactly the keys and
// tables that `config print` writes, and renders without warnings.
func TestGenDocsConfigPage(t *testing.T) {
	t.Parallel()
	needMan(t)
	bin := testBinary(t)
	dir := t.TempDir()
	run(t, bin, "gen-docs", "--man", dir)
	page, err := os.ReadFile(filepath.Join(dir, "relayguard.toml.5"))
	if err != nil {
		t.Fatal(err)
	}
	docKeys, docSections, docMaps := roffKeys(string(page))

	var printed map[string]any
	if err := toml.Unmarshal([]byte(run(t, bin, "config", "print")), &printed); err != nil {
		t.Fatal(err)
	}
	cfgKeys, cfgSections := map[string]bool{}, map[string]bool{}
	tomlKeys(printed, "", cfgKeys, cfgSections)
	inMap := func(k string) bool {
		for m := range docMaps {
			if strings.HasPrefix(k, m+".") {
				return true
			}
		}
		return false
	}
	for k := range cfgKeys {
		if !docKeys[k] && !inMap(k) && !docMaps[k] && !docSections[k] {
			t.Errorf("config print has %s; relayguard.toml(5) does not document it", k)
		}
	}
	for s := range cfgSections {
		if !docSections[s] && !inMap(s) {
			t.Errorf("config print has table [%s]; relayguard.toml(5) does not document it", s)
		}
	}
	for k := range docKeys {
		// An array of tables that is empty by default (policy.access) is
		// "access = []" in config print, while the page documents its
		// elements' keys.
		if i := strings.LastIndex(k, "."); i > 0 && docSections[k[:i]] && cfgKeys[k[:i]] {
			continue
		}
		if !cfgKeys[k] {
			t.Errorf("relayguard.toml(5) documents %s, which config print does not write", k)
		}
	}
	if len(docKeys) < 50 {
		t.Errorf("only %d keys documented: %v", len(docKeys), slices.Sorted(func(yield func(string) bool) {
			for k := range docKeys {
				if !yield(k) {
					return
				}
			}
		}))
	}
	text := renderMan(t, filepath.Join(dir, "relayguard.toml.5"))
	for _, s := range []string{"RELAYGUARD.TOML(5)", "max_message_size", "[[guard.subnet]]", "Default elements", "relayguard config print"} {
		if !strings.Contains(text, s) {
			t.Errorf("rendered relayguard.toml(5) lacks %q", s)
		}
	}
}

// TestGenDocsCompletions: the bash completion gen-docs writes completes
// subcommands through the real binary with bash-completion loaded.
func TestGenDocsCompletions(t *testing.T) {
	t.Parallel()
	const loader = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(loader); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("bash-completion is not installed")
		}
		t.Skip("bash-completion is not installed")
	}
	bin := testBinary(t)
	dir := t.TempDir()
	run(t, bin, "gen-docs", "--completions", dir)
	for _, f := range []string{"relayguard.bash", "_relayguard", "relayguard.fish"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("completion %s missing or empty: %v", f, err)
		}
	}
	script := `source ` + loader + `; source "$1"
complete_line() { COMP_LINE="$1"; COMP_POINT=${#1}; read -ra COMP_WORDS <<<"$1"; [[ $1 == *" " ]] && COMP_WORDS+=(""); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMPREPLY=(); __start_relayguard 2>/dev/null; echo "${COMPREPLY[*]}"; }
complete_line "relayguard us"
complete_line "relayguard user a"
complete_line "relayguard queue "`
	cmd := exec.Command("bash", "-c", script, "bash", filepath.Join(dir, "relayguard.bash"))
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"user", "add addr", "delete flush hold list release show"}
	if !slices.Equal(lines, want) {
		t.Errorf("completions = %q, want %q", lines, want)
	}
}
