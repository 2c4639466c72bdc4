package mandoc

import (
	"bytes"
	"encoding"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/relayguard/relayguard/internal/config"
)

// ConfigPage writes relayguard.toml(5): every key of the configuration
// schema with its type, its default (the value in def, normally
// config.Default()) and the comment that `relayguard config print` writes
// above it. The page is generated from the schema's `toml` and `comment`
// struct tags, so it cannot drift from what the program reads.
func ConfigPage(w io.Writer, def *config.Config, h Header) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, ".TH RELAYGUARD.TOML 5 %s %s %s\n", quote(h.date()), quote("relayguard "+h.Version), quote(manual))
	b.WriteString(".SH NAME\nrelayguard.toml \\- configuration file of relayguard(8)\n")
	b.WriteString(".SH SYNOPSIS\n.I /etc/relayguard/relayguard.toml\n")
	b.WriteString(`.SH DESCRIPTION
relayguard reads one TOML file (TOML v1.0), named with
.B \-\-config
(the packaged commands and systemd units read
.IR /etc/relayguard/relayguard.toml ).
Every key is optional: a key that is absent keeps the default shown below, and
without any file relayguard runs on these defaults (the embedded default
configuration).
A key the schema does not know is an error that names it, so a typo never
silently does nothing.
.PP
.B relayguard config print
prints the effective configuration, with the comments of this page, ready to be
saved and edited;
.B relayguard config check
validates a file without starting anything.
.PP
Durations are strings of a number and a unit:
.BR 90s ,
.BR 5m ,
.BR 1h30m ,
.B 7d
(days).
Networks are CIDR prefixes
.RB ( 192.0.2.0/24 ,
.BR 2001:db8::/32 )
or bare addresses.
A relative path is resolved against
.BR data_dir .
.PP
Tables written
.B [[name]]
form an array: each occurrence adds one element, and elements given in the
file replace the default elements rather than adding to them.
`)
	b.WriteString(".SH KEYS\n")
	if err := writeTable(&b, reflect.ValueOf(def).Elem(), "", true); err != nil {
		return err
	}
	b.WriteString(`.SH FILES
.TP
.I /etc/relayguard/relayguard.toml
The configuration of the packaged services and commands.
.TP
.I /var/lib/relayguard
The packaged data directory
.RB ( data_dir ):
the database, the spool, the local Maildirs and the self\-signed certificate.
.SH "SEE ALSO"
.BR relayguard (8),
.BR relayguard\-config\-print (8),
.BR relayguard\-config\-check (8),
.BR relayguard\-serve (8)
`)
	_, err := w.Write(b.Bytes())
	return err
}

// durationType is the one non-string TextMarshaler of the schema worth
// naming by its own type.
var durationType = reflect.TypeOf(config.Duration(0))

var textMarshaler = reflect.TypeOf((*encoding.TextMarshaler)(nil)).Elem()

// isTable reports whether values of t are written as a TOML table.
func isTable(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && !t.Implements(textMarshaler) && !reflect.PointerTo(t).Implements(textMarshaler)
}

// field is one keyed field of a schema struct.
type field struct {
	key, comment string
	v            reflect.Value
}

func fields(v reflect.Value) []field {
	var out []field
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		key, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
		if key == "-" {
			continue
		}
		if key == "" {
			key = sf.Name
		}
		out = append(out, field{key: key, comment: sf.Tag.Get("comment"), v: v.Field(i)})
	}
	return out
}

// writeTable documents the leaf keys of the struct v, then its sub-tables,
// arrays of tables and maps, each under a .SS heading named by its path.
// withDefaults is false for the elements of an array of tables, whose zero
// values are no defaults (the array's default elements are shown instead).
func writeTable(b *bytes.Buffer, v reflect.Value, path string, withDefaults bool) error {
	fs := fields(v)
	for _, f := range fs {
		t := f.v.Type()
		if isTable(t) || (t.Kind() == reflect.Slice && isTable(t.Elem())) || t.Kind() == reflect.Map {
			continue
		}
		fmt.Fprintf(b, ".TP\n.B %s\n", escape(f.key))
		if withDefaults {
			def, err := tomlValue(f.v)
			if err != nil {
				return fmt.Errorf("mandoc: %s%s: %w", path, f.key, err)
			}
			fmt.Fprintf(b, "(%s; default \\fB%s\\fR)\n", typeName(t), escape(def))
		} else {
			fmt.Fprintf(b, "(%s)\n", typeName(t))
		}
		if f.comment != "" {
			b.WriteString(".br\n")
		}
		writeComment(b, f.comment)
	}
	for _, f := range fs {
		t := f.v.Type()
		name := path + f.key
		switch {
		case isTable(t):
			fmt.Fprintf(b, ".SS %s\n", quote("["+name+"]"))
			writeComment(b, f.comment)
			if err := writeTable(b, f.v, name+".", withDefaults); err != nil {
				return err
			}
		case t.Kind() == reflect.Slice && isTable(t.Elem()):
			fmt.Fprintf(b, ".SS %s\n", quote("[["+name+"]]"))
			writeComment(b, f.comment)
			if f.comment != "" {
				b.WriteString(".PP\n")
			}
			b.WriteString("Each element has these keys:\n")
			if err := writeTable(b, reflect.New(t.Elem()).Elem(), name+".", false); err != nil {
				return err
			}
			if f.v.Len() > 0 {
				block, err := tomlBlock(name, f.v)
				if err != nil {
					return fmt.Errorf("mandoc: %s: %w", name, err)
				}
				fmt.Fprintf(b, ".PP\nDefault elements:\n.PP\n.RS\n.nf\n%s.fi\n.RE\n", escapeLines(block))
			}
		case t.Kind() == reflect.Map:
			fmt.Fprintf(b, ".SS %s\n", quote("["+name+"]"))
			writeComment(b, f.comment)
			fmt.Fprintf(b, ".PP\nA table of %s keys and %s values", typeName(t.Key()), typeName(t.Elem()))
			if f.v.Len() == 0 {
				b.WriteString(", empty by default.\n")
				continue
			}
			block, err := tomlBlock(name, f.v)
			if err != nil {
				return fmt.Errorf("mandoc: %s: %w", name, err)
			}
			fmt.Fprintf(b, "; by default:\n.PP\n.RS\n.nf\n%s.fi\n.RE\n", escapeLines(block))
		}
	}
	return nil
}

// writeComment writes a schema comment keeping its line breaks, as
// `config print` does.
func writeComment(b *bytes.Buffer, c string) {
	if c == "" {
		return
	}
	for i, line := range strings.Split(c, "\n") {
		if i > 0 {
			b.WriteString(".br\n")
		}
		b.WriteString(escape(strings.TrimSpace(line)) + "\n")
	}
}

// typeName names a schema type in TOML's words.
func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t.Implements(textMarshaler) || reflect.PointerTo(t).Implements(textMarshaler):
		return "string"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "float"
	case reflect.Slice, reflect.Array:
		return "array of " + typeName(t.Elem()) + "s"
	case reflect.Map:
		return "table"
	}
	return t.Kind().String()
}

// tomlValue renders one value as it would appear right of "key = ".
func tomlValue(v reflect.Value) (string, error) {
	out, err := toml.Marshal(map[string]any{"v": v.Interface()})
	if err != nil {
		return "", err
	}
	_, val, ok := strings.Cut(strings.TrimSpace(string(out)), " = ")
	if !ok {
		return "", fmt.Errorf("unexpected TOML %q", out)
	}
	return val, nil
}

// tomlBlock renders v as the TOML of the dotted path (a table or an array
// of tables).
func tomlBlock(path string, v reflect.Value) (string, error) {
	parts := strings.Split(path, ".")
	var doc any = v.Interface()
	for i := len(parts) - 1; i >= 0; i-- {
		doc = map[string]any{parts[i]: doc}
	}
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(false)
	if err := enc.Encode(doc); err != nil {
		return "", err
	}
	// The comments are on the page already, and the parents' headers
	// ([guard] above [[guard.subnet]]) say nothing: keep the block short.
	parents := map[string]bool{}
	for i := 1; i < len(parts); i++ {
		parents["["+strings.Join(parts[:i], ".")+"]"] = true
	}
	var out strings.Builder
	for _, line := range strings.Split(buf.String(), "\n") {
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "#") || parents[t] {
			continue
		}
		out.WriteString(line + "\n")
	}
	return strings.TrimLeft(out.String(), "\n"), nil
}
