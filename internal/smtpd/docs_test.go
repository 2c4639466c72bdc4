package smtpd

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/relayguard/relayguard/internal/config"
)

// TestDocumentedKeysExist: every configuration key docs/smtpd.md names
// exists in the configuration (it once documented limits.data_term_timeout,
// which the configuration refused as unknown).
func TestDocumentedKeysExist(t *testing.T) {
	doc, err := os.ReadFile("../../docs/smtpd.md")
	if err != nil {
		t.Fatal(err)
	}
	b, err := config.Default().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	if err := toml.Unmarshal(b, &tree); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("`((?:limits|spool|auth|guard)\\.[a-z_]+)`")
	var keys []string
	for _, m := range re.FindAllStringSubmatch(string(doc), -1) {
		if !slices.Contains(keys, m[1]) {
			keys = append(keys, m[1])
		}
	}
	if len(keys) < 20 {
		t.Fatalf("only %d keys found in docs/smtpd.md: %v", len(keys), keys)
	}
	for _, k := range keys {
		section, name, _ := strings.Cut(k, ".")
		tbl, _ := tree[section].(map[string]any)
		if _, ok := tbl[name]; !ok {
			t.Errorf("docs/smtpd.md documents %s, which the configuration does not have", k)
		}
	}
}
