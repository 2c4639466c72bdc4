package maillog

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestOnlyMaillogWritesTheVocabulary: no production code outside this
// package writes a record of the vocabulary (a slog call whose message is
// a Kind) by itself: such a record skips the writer's keys and the
// round-trip test, and the readers (watch, report, the fail2ban filter)
// may misread it. Found by review: ratelimit wrote its own "limit reached"
// with slog.
func TestOnlyMaillogWritesTheVocabulary(t *testing.T) {
	kinds := map[string]bool{}
	for _, k := range Kinds {
		kinds[string(k)] = true
	}
	logCalls := map[string]bool{"Debug": true, "Info": true, "Warn": true, "Error": true,
		"DebugContext": true, "InfoContext": true, "WarnContext": true, "ErrorContext": true, "Log": true, "LogAttrs": true}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == "testdata" || n == "vendor" || strings.HasPrefix(n, ".") && path != root {
				return filepath.SkipDir
			}
			if path == filepath.Join(root, "internal", "maillog") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !logCalls[sel.Sel.Name] {
				return true
			}
			// The message is the first string literal among the first
			// three arguments (ctx and level come before it).
			for _, a := range call.Args[:min(3, len(call.Args))] {
				lit, ok := a.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				if msg, err := strconv.Unquote(lit.Value); err == nil && kinds[msg] {
					rel, _ := filepath.Rel(root, path)
					t.Errorf("%s:%d writes %q itself: use maillog's writer", rel, fset.Position(call.Pos()).Line, msg)
				}
				break
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("only %d Go files under %s: not the module root?", files, root)
	}
}
