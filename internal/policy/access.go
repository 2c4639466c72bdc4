package policy

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/relayguard/relayguard/internal/config"
)

// accessTable is a Postfix-style CIDR access table (cidr_table(5)): entries
// are tried in order and the first that contains the client decides.
type accessTable struct {
	name    string
	entries []accessEntry
}

type accessEntry struct {
	prefix netip.Prefix
	v      Verdict
}

func loadAccessTable(t config.AccessTable) (*accessTable, error) {
	at := &accessTable{name: t.Name}
	add := func(where, line string) error {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			return nil
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return fmt.Errorf("policy: access table %q %s: entry %q: want \"CIDR ACTION [text]\"", t.Name, where, line)
		}
		p, err := config.ParsePrefix(f[0])
		if err != nil {
			return fmt.Errorf("policy: access table %q %s: entry %q: %w", t.Name, where, line, err)
		}
		rest := strings.TrimSpace(strings.TrimPrefix(line, f[0]))
		v, err := ParseAction(rest)
		if err != nil {
			return fmt.Errorf("policy: access table %q %s: entry %q: %w", t.Name, where, line, err)
		}
		at.entries = append(at.entries, accessEntry{prefix: p, v: v})
		return nil
	}
	for i, e := range t.Entries {
		if err := add(fmt.Sprintf("entry %d", i), e); err != nil {
			return nil, err
		}
	}
	if t.File != "" {
		f, err := os.Open(t.File)
		if err != nil {
			return nil, fmt.Errorf("policy: access table %q: %w", t.Name, err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		n := 0
		for sc.Scan() {
			n++
			if err := add(fmt.Sprintf("%s:%d", t.File, n), sc.Text()); err != nil {
				return nil, err
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("policy: access table %q: %s: %w", t.Name, t.File, err)
		}
	}
	return at, nil
}

func (t *accessTable) lookup(ip netip.Addr) Verdict {
	for _, e := range t.entries {
		if e.prefix.Contains(ip) {
			return e.v
		}
	}
	return dunno
}

// ParseAction parses an access(5) action: OK, PERMIT, DUNNO, REJECT [text],
// DEFER [text], DEFER_IF_PERMIT [text], WARN [text], or an SMTP reply
// "4xx|5xx [x.y.z] text".
func ParseAction(s string) (Verdict, error) {
	word, text, _ := strings.Cut(strings.TrimSpace(s), " ")
	text = strings.TrimSpace(text)
	or := func(def string) string {
		if text == "" {
			return def
		}
		return text
	}
	// access(5): the text of REJECT, DEFER and DEFER_IF_PERMIT may start
	// with an RFC 3463 enhanced status code of the reply's class.
	enhanced := func(class byte, def string) string {
		if enh, rest, _ := strings.Cut(text, " "); isEnhanced(enh) && enh[0] == class {
			text = strings.TrimSpace(rest)
			return enh
		}
		return def
	}
	switch strings.ToUpper(word) {
	case "OK", "PERMIT":
		return Verdict{Action: Permit}, nil
	case "DUNNO":
		return dunno, nil
	case "REJECT":
		enh := enhanced('5', "5.7.1")
		return Verdict{Action: Reject, Code: 554, Enhanced: enh, Text: or("Access denied")}, nil
	case "DEFER":
		enh := enhanced('4', "4.7.1")
		return Verdict{Action: Defer, Code: 450, Enhanced: enh, Text: or("Try again later")}, nil
	case "DEFER_IF_PERMIT":
		enh := enhanced('4', "4.7.1")
		return Verdict{Action: Defer, Code: 450, Enhanced: enh, Text: or("Try again later"), IfPermit: true}, nil
	case "WARN":
		return Verdict{Action: Warn, Text: or("warning")}, nil
	}
	code, err := strconv.Atoi(word)
	if err != nil || len(word) != 3 || (word[0] != '4' && word[0] != '5') {
		return Verdict{}, fmt.Errorf("action %q: want OK, DUNNO, REJECT, DEFER, DEFER_IF_PERMIT, WARN or a 4xx/5xx code", word)
	}
	v := Verdict{Action: Reject, Code: code, Enhanced: "5.7.1"}
	if word[0] == '4' {
		v.Action, v.Enhanced = Defer, "4.7.1"
	}
	if enh, rest, _ := strings.Cut(text, " "); isEnhanced(enh) && enh[0] == word[0] {
		v.Enhanced, text = enh, strings.TrimSpace(rest)
	}
	v.Text = or("Access denied")
	return v, nil
}

// isEnhanced reports whether s looks like an RFC 3463 status code.
func isEnhanced(s string) bool {
	p := strings.Split(s, ".")
	if len(p) != 3 || (p[0] != "4" && p[0] != "5" && p[0] != "2") {
		return false
	}
	for _, x := range p[1:] {
		if n, err := strconv.Atoi(x); err != nil || n < 0 || n > 999 {
			return false
		}
	}
	return true
}
