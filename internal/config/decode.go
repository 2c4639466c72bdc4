package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// decode reads the TOML document b over c. Every error is one line that
// names the key (as written in the file, e.g. limits.max_recipients), the
// value found and what is expected there; a syntax error names its line and
// column instead. The document is first read into plain TOML values and
// checked against the schema (unknown keys, types, durations), because the
// TOML library reports type errors with Go field names and reads a bare
// integer into a duration as nanoseconds.
func decode(b []byte, c *Config) error {
	var doc map[string]any
	if err := toml.Unmarshal(b, &doc); err != nil {
		return syntaxError(err)
	}
	if err := checkTable(doc, reflect.TypeOf(*c), ""); err != nil {
		return err
	}
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		// checkTable accepts only what decodes; this is a backstop that
		// still names the key.
		var de *toml.DecodeError
		if errors.As(err, &de) && len(de.Key()) > 0 {
			return fmt.Errorf("%s: %s", strings.Join(de.Key(), "."), strings.TrimPrefix(de.Error(), "toml: "))
		}
		return syntaxError(err)
	}
	return nil
}

func syntaxError(err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Errorf("line %d column %d: %s", row, col, strings.TrimPrefix(de.Error(), "toml: "))
	}
	return err
}

var durationType = reflect.TypeOf(Duration(0))

// tomlFields maps the TOML keys of a struct type to its fields.
func tomlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		out[name] = f
	}
	return out
}

func joinKey(prefix, k string) string {
	if !isBareKey(k) {
		k = strconv.Quote(k)
	}
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

func isBareKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// checkTable checks a TOML table against the struct type t.
func checkTable(tbl map[string]any, t reflect.Type, prefix string) error {
	fields := tomlFields(t)
	keys := make([]string, 0, len(tbl))
	for k := range tbl {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		key := joinKey(prefix, k)
		f, ok := fields[k]
		if !ok {
			return fmt.Errorf("%s: unknown key%s", key, suggest(k, fields))
		}
		if err := checkValue(tbl[k], f.Type, key); err != nil {
			return err
		}
	}
	return nil
}

// suggest names the known key closest to a misspelt one.
func suggest(k string, fields map[string]reflect.StructField) string {
	best, bestD := "", 3
	for name := range fields {
		if d := editDistance(k, name); d < bestD || d == bestD && best != "" && name < best {
			best, bestD = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkValue checks one TOML value against the Go type it decodes into.
func checkValue(v any, t reflect.Type, key string) error {
	if t == durationType {
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s = %s: want a duration with a unit in quotes, such as \"300s\", \"5m\", \"2h\" or \"7d\" (a bare number has no unit)", key, showValue(v))
		}
		var d Duration
		if err := d.UnmarshalText([]byte(s)); err != nil {
			return fmt.Errorf("%s = %q: want a duration such as \"300s\", \"5m\", \"2h\" or \"7d\"", key, s)
		}
		return nil
	}
	want := ""
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			want = "a string in quotes"
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			want = "true or false"
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(int64)
		if !ok {
			want = "an integer"
		} else if reflect.New(t).Elem().OverflowInt(n) {
			want = "a smaller integer"
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(int64)
		if !ok || n < 0 {
			want = "a non-negative integer"
		} else if reflect.New(t).Elem().OverflowUint(uint64(n)) {
			want = "a smaller integer"
		}
	case reflect.Float32, reflect.Float64:
		switch f := v.(type) {
		case float64:
			// TOML has nan and inf; every comparison with NaN is false,
			// so a threshold of nan passed "must be at least 1" and then
			// decided every case (bantime_factor = nan made each repeat
			// ban expire at once; volume_factor = nan flagged every
			// account over volume_minimum).
			if math.IsNaN(f) || math.IsInf(f, 0) {
				want = "a finite number"
			}
		case int64:
		default:
			want = "a number"
		}
	case reflect.Slice:
		list, ok := v.([]any)
		if !ok {
			want = "a list [ ... ]"
			break
		}
		for i, e := range list {
			if err := checkValue(e, t.Elem(), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		tbl, ok := v.(map[string]any)
		if !ok {
			want = "a table"
			break
		}
		keys := make([]string, 0, len(tbl))
		for k := range tbl {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if err := checkValue(tbl[k], t.Elem(), joinKey(key, k)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		tbl, ok := v.(map[string]any)
		if !ok {
			want = "a table"
			break
		}
		return checkTable(tbl, t, key)
	}
	if want != "" {
		return fmt.Errorf("%s = %s: want %s", key, showValue(v), want)
	}
	return nil
}

// showValue renders a TOML value for an error message.
func showValue(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case []any:
		return "a list"
	case map[string]any:
		return "a table"
	case time.Time:
		return x.Format(time.RFC3339)
	}
	return fmt.Sprint(v)
}
