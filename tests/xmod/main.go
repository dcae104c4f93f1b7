// Command xmodjudge prints what golang.org/x/mod decides about module paths, file paths,
// versions and module zips, so that the Python tests can hold athens.module and
// athens.modzip to the go command's own rules (tests/test_xmod_agreement.py).
//
//	xmodjudge strings FILE.go...  the string literals of Go files, and those of each composite literal
//	xmodjudge letters             every letter above ASCII with its case-fold key (the zip collision rule)
//	xmodjudge judge               one JSON request a line on stdin, one JSON verdict a line on stdout
//
// Strings travel hex-encoded: the vectors include bytes that are not UTF-8.
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
)

type request struct {
	Op   string   `json:"op"`
	Args []string `json:"args"` // hex
}

type verdict struct {
	OK  bool   `json:"ok"`
	Out string `json:"out"` // hex
	Err string `json:"err"`
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: xmodjudge strings FILE... | letters | judge")
	}
	switch os.Args[1] {
	case "strings":
		stringsOf(os.Args[2:])
	case "letters":
		letters()
	case "judge":
		judge()
	default:
		fail("unknown command " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "xmodjudge:", msg)
	os.Exit(2)
}

// stringsOf prints {"strings": [...], "groups": [[...], ...]}: every string literal, and for each
// composite literal (a table row) the string literals directly inside it, in order.
func stringsOf(files []string) {
	var all []string
	var groups [][]string
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			fail(err.Error())
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if s, ok := unquote(n); ok {
					all = append(all, hex.EncodeToString([]byte(s)))
				}
			case *ast.CompositeLit:
				var row []string
				for _, e := range n.Elts {
					if kv, ok := e.(*ast.KeyValueExpr); ok {
						e = kv.Value
					}
					if lit, ok := e.(*ast.BasicLit); ok {
						if s, ok := unquote(lit); ok {
							row = append(row, hex.EncodeToString([]byte(s)))
						}
					}
				}
				if len(row) > 0 {
					groups = append(groups, row)
				}
			}
			return true
		})
	}
	out, _ := json.Marshal(map[string]any{"strings": all, "groups": groups})
	os.Stdout.Write(append(out, '\n'))
}

func unquote(lit *ast.BasicLit) (string, bool) {
	if lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// letters prints "CODEPOINT FOLD" (hex) for every rune above ASCII that unicode.IsLetter accepts
// (the only runes above ASCII a file path may hold), FOLD being the smallest rune of its
// unicode.SimpleFold orbit: the key of x/mod's case-insensitive collision check.
func letters() {
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for r := rune(0x80); r <= unicode.MaxRune; r++ {
		if !unicode.IsLetter(r) {
			continue
		}
		fold := r
		for {
			next := unicode.SimpleFold(fold)
			if next <= fold {
				fold = next
				break
			}
			fold = next
		}
		if 'A' <= fold && fold <= 'Z' {
			fold += 'a' - 'A'
		}
		fmt.Fprintf(w, "%x %x\n", r, fold)
	}
}

func judge() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	enc := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			fail(err.Error())
		}
		args := make([]string, len(req.Args))
		for i, a := range req.Args {
			b, err := hex.DecodeString(a)
			if err != nil {
				fail(err.Error())
			}
			args[i] = string(b)
		}
		if err := enc.Encode(decide(req.Op, args)); err != nil {
			fail(err.Error())
		}
	}
	if err := in.Err(); err != nil {
		fail(err.Error())
	}
}

func result(out string, err error) verdict {
	if err != nil {
		return verdict{OK: false, Err: err.Error()}
	}
	return verdict{OK: true, Out: hex.EncodeToString([]byte(out))}
}

func yes(ok bool) verdict { return verdict{OK: ok} }

func decide(op string, a []string) verdict {
	switch op {
	case "CheckPath":
		return result("", module.CheckPath(a[0]))
	case "CheckImportPath":
		return result("", module.CheckImportPath(a[0]))
	case "CheckFilePath":
		return result("", module.CheckFilePath(a[0]))
	case "EscapePath":
		return result(module.EscapePath(a[0]))
	case "UnescapePath":
		return result(module.UnescapePath(a[0]))
	case "EscapeVersion":
		return result(module.EscapeVersion(a[0]))
	case "UnescapeVersion":
		return result(module.UnescapeVersion(a[0]))
	case "SplitPathVersion":
		prefix, major, ok := module.SplitPathVersion(a[0])
		return verdict{OK: ok, Out: hex.EncodeToString([]byte(prefix + "\x00" + major))}
	case "Check":
		// What may be stored: module.Check, on a version that is its own CanonicalVersion (as zip.CheckZip asks).
		if v := module.CanonicalVersion(a[1]); v != a[1] {
			return verdict{Err: fmt.Sprintf("version %q is not canonical (should be %q)", a[1], v)}
		}
		return result("", module.Check(a[0], a[1]))
	case "CheckPathMajor":
		return result("", module.CheckPathMajor(a[0], a[1]))
	case "IsPseudoVersion":
		return yes(module.IsPseudoVersion(a[0]))
	case "semver":
		v := a[0]
		parts := []string{semver.Canonical(v), semver.Major(v), semver.Prerelease(v), semver.Build(v)}
		return verdict{OK: semver.IsValid(v), Out: hex.EncodeToString([]byte(strings.Join(parts, "\x00")))}
	case "Compare":
		return verdict{OK: true, Out: hex.EncodeToString([]byte(strconv.Itoa(semver.Compare(a[0], a[1]))))}
	case "zip":
		return unzip(a[0], module.Version{Path: a[1], Version: a[2]})
	}
	fail("unknown op " + op)
	return verdict{}
}

// unzip answers what the go command does with a zip it downloads: it hashes it for go.sum
// (dirhash.HashZip, which reads every entry, directories included), then extracts it with
// zip.Unzip into an empty directory. Out is the hash. CheckZip alone would miss what only
// reading finds (an unreadable entry, a size that lies, a name the file system refuses).
func unzip(zipFile string, m module.Version) verdict {
	hash, err := dirhash.HashZip(zipFile, dirhash.Hash1)
	if err != nil {
		return verdict{Err: err.Error()}
	}
	dir, err := os.MkdirTemp("", "xmodjudge-")
	if err != nil {
		fail(err.Error())
	}
	defer os.RemoveAll(dir)
	if err := modzip.Unzip(dir+"/m", m, zipFile); err != nil {
		return verdict{Err: err.Error()}
	}
	return result(hash, nil)
}
