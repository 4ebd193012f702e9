package fuzz

// The committed seed corpora and the known-bug inputs.
//
// Static seeds live in this package's tables (preHandshakeSeeds,
// postHandshakeSeeds, chainSeeds, tokenSeeds, jwksSeeds, configSeeds) and are
// committed as testdata/fuzz/<FuzzName>/seed-<name>, which `go test` replays
// and `go test -fuzz` starts from. TestSeedCorpus keeps the two in step.
// Files named otherwise were captured when the corpus was written (real
// ClientHellos, this run's public JWKS, the example configurations) or found
// by the fuzzer, and are kept as they are.
//
// Regenerate after changing a table:
//
//	FLEETGATE_WRITE_CORPUS=1 go test ./fuzz -run '^TestWriteSeedCorpus$'
//
// testdata/fuzz/<FuzzName>/regress-* are inputs that once found a bug in
// another package (regressionCorpus); the TestRegression* tests replay them
// by name, and `go test` replays them with every other seed.

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetgate/fleetgate/configs"
)

// maxCorpusBytes bounds the committed corpora (all targets together).
const maxCorpusBytes = 1 << 20

// corpusFile is one committed input: its target, file name and values.
type corpusFile struct {
	target, name string
	values       []any
}

// staticCorpus is every seed defined in code, as committed files.
func staticCorpus() []corpusFile {
	var out []corpusFile
	add := func(target, name string, values ...any) {
		out = append(out, corpusFile{target, "seed-" + name, values})
	}
	for _, s := range preHandshakeSeeds() {
		add("FuzzTLSPreHandshake", s.name, s.data, s.cuts)
	}
	for _, s := range postHandshakeSeeds() {
		add("FuzzTLSPostHandshake", s.name, s.mode, s.script)
	}
	for _, s := range chainSeeds() {
		add("FuzzVerifyRawChain", s.name, s.chain, s.offset, s.site)
	}
	for _, s := range tokenSeeds() {
		add("FuzzTokenVerify", s.name, s.tmpl)
	}
	for _, s := range jwksSeeds() {
		add("FuzzJWKSParse", s.name, []byte(s.doc))
	}
	for _, s := range configSeeds() {
		add("FuzzConfigParse", s.name, []byte(s.toml))
	}
	return out
}

// regressionCorpus is every input that once found a bug elsewhere (see the
// TestRegression* tests); they are replayed with the rest of the corpus.
func regressionCorpus() []corpusFile {
	return []corpusFile{
		{"FuzzTokenVerify", "regress-policy-newline-after-token", []any{"$T0\n"}},
		{"FuzzTokenVerify", "regress-policy-crlf-inside-signature", []any{"$H.$P0.$S0\r\n"}},
		{"FuzzTokenVerify", "regress-policy-newline-previous-key", []any{"$T2\n"}},
		{"FuzzTokenVerify", "regress-policy-high-s-signature", []any{"$H.$P0.$M0"}},
	}
}

// capturedCorpus is what the writer records from this run: real
// ClientHellos, the JWKS documents of this run's keys, and the example
// configuration files.
func capturedCorpus(tb testing.TB) []corpusFile {
	var out []corpusFile
	hellos := helloSeeds(tb)
	for _, h := range hellos {
		out = append(out, corpusFile{"FuzzClientHello", "hello-" + h.name, []any{h.hello, uint16(0)}})
	}
	first := hellos[0].hello
	out = append(out,
		corpusFile{"FuzzTLSPreHandshake", "hello-tls13-one-byte-records", []any{fragmentRecords(first, 1), []byte{}}},
		corpusFile{"FuzzTLSPreHandshake", "hello-tls13-twice", []any{append(bytes.Clone(first), first...), []byte{}}},
		corpusFile{"FuzzTLSPreHandshake", "hello-tls13-one-byte-chunks", []any{first, []byte{1}}},
		corpusFile{"FuzzTLSPreHandshake", "hello-tls13-then-garbage", []any{append(bytes.Clone(first), bytes.Repeat([]byte{0x17, 3, 3, 0, 4, 1, 2, 3, 4}, 4)...), []byte{}}},
	)
	ts := getTokenSet(tb)
	out = append(out,
		corpusFile{"FuzzJWKSParse", "run-es256-eddsa", []any{ts.ks.JWKS()}},
		corpusFile{"FuzzJWKSParse", "run-rs256", []any{ts.rsaJWKS}},
		corpusFile{"FuzzConfigParse", "file-demo", []any{configs.Demo()}},
	)
	if example, err := os.ReadFile(filepath.Join("..", "configs", "fleetgate.toml")); err == nil {
		out = append(out, corpusFile{"FuzzConfigParse", "file-fleetgate", []any{example}})
	}
	return out
}

// TestWriteSeedCorpus writes the committed corpora; it only runs with
// FLEETGATE_WRITE_CORPUS=1. Existing files it does not write (fuzzer
// finds) are left alone.
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("FLEETGATE_WRITE_CORPUS") != "1" {
		t.Skip("set FLEETGATE_WRITE_CORPUS=1 to rewrite testdata/fuzz")
	}
	write := func(dir string, files []corpusFile) {
		for _, f := range files {
			path := filepath.Join("testdata", dir, f.target, f.name)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, marshalCorpus(f.values...), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("fuzz", staticCorpus())
	write("fuzz", capturedCorpus(t))
	write("fuzz", regressionCorpus())
}

// TestSeedCorpus checks the committed corpora: every static seed is
// committed as its table says, every file parses as `go test fuzz v1`
// with the target's argument types, no known-bug input sits in the
// replayed corpus, and the whole stays under maxCorpusBytes.
func TestSeedCorpus(t *testing.T) {
	want := map[string][]byte{}
	for _, f := range staticCorpus() {
		want[filepath.Join(f.target, f.name)] = marshalCorpus(f.values...)
	}
	types := map[string]string{
		"FuzzTLSPreHandshake":  "[]uint8 []uint8",
		"FuzzClientHello":      "[]uint8 uint16",
		"FuzzTLSPostHandshake": "uint8 []uint8",
		"FuzzVerifyRawChain":   "[]uint8 int64 uint8",
		"FuzzTokenVerify":      "string",
		"FuzzJWKSParse":        "[]uint8",
		"FuzzConfigParse":      "[]uint8",
	}
	total := 0
	perTarget := map[string]int{}
	for _, f := range regressionCorpus() {
		want[filepath.Join(f.target, f.name)] = marshalCorpus(f.values...)
	}
	for _, root := range []string{"fuzz"} {
		err := filepath.WalkDir(filepath.Join("testdata", root), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			total += len(data)
			target := filepath.Base(filepath.Dir(path))
			vals, err := unmarshalCorpus(data)
			if err != nil {
				t.Errorf("%s: %v", path, err)
				return nil
			}
			if got := typesOf(vals); got != types[target] {
				t.Errorf("%s: values of types %q, %s takes %q", path, got, target, types[target])
			}
			perTarget[target]++
			rel := filepath.Join(target, filepath.Base(path))
			if w, ok := want[rel]; ok {
				if !bytes.Equal(w, data) {
					t.Errorf("%s differs from its table entry; run FLEETGATE_WRITE_CORPUS=1 go test ./fuzz -run '^TestWriteSeedCorpus$'", path)
				}
				delete(want, rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for rel := range want {
		t.Errorf("seed %s is not committed; run FLEETGATE_WRITE_CORPUS=1 go test ./fuzz -run '^TestWriteSeedCorpus$'", rel)
	}
	for target := range types {
		if perTarget[target] == 0 {
			t.Errorf("%s has no committed corpus", target)
		}
	}
	if total > maxCorpusBytes {
		t.Errorf("corpora total %d bytes, bound %d", total, maxCorpusBytes)
	}
}

// marshalCorpus encodes values as Go's fuzzing engine does (go test fuzz v1).
func marshalCorpus(values ...any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		case byte:
			fmt.Fprintf(&b, "byte(%q)\n", v)
		case int64, uint16:
			fmt.Fprintf(&b, "%T(%v)\n", v, v)
		default:
			panic(fmt.Sprintf("marshalCorpus: unsupported type %T", v))
		}
	}
	return b.Bytes()
}

// unmarshalCorpus decodes the subset of go test fuzz v1 these targets use.
func unmarshalCorpus(data []byte) ([]any, error) {
	lines := strings.Split(string(data), "\n")
	if len(lines) < 2 || strings.TrimSuffix(lines[0], "\r") != "go test fuzz v1" {
		return nil, fmt.Errorf("not a go test fuzz v1 file")
	}
	var out []any
	for _, line := range lines[1:] {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		expr, err := parser.ParseExpr(line)
		if err != nil {
			return nil, fmt.Errorf("line %.40q: %v", line, err)
		}
		call, ok := expr.(*ast.CallExpr)
		if !ok || len(call.Args) != 1 {
			return nil, fmt.Errorf("line %.40q: not a conversion", line)
		}
		arg := call.Args[0]
		neg := false
		if u, ok := arg.(*ast.UnaryExpr); ok && u.Op == token.SUB {
			neg, arg = true, u.X
		}
		lit, ok := arg.(*ast.BasicLit)
		if !ok {
			return nil, fmt.Errorf("line %.40q: not a literal", line)
		}
		var fun string
		switch f := call.Fun.(type) {
		case *ast.ArrayType:
			fun = "[]byte"
		case *ast.Ident:
			fun = f.Name
		}
		num := lit.Value
		if neg {
			num = "-" + num
		}
		var v any
		switch fun {
		case "[]byte", "string":
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return nil, fmt.Errorf("line %.40q: %v", line, err)
			}
			v = s
			if fun == "[]byte" {
				v = []byte(s)
			}
		case "byte", "uint8":
			if lit.Kind == token.CHAR { // byte('x'): %q of the byte as a rune
				r, _, tail, err := strconv.UnquoteChar(lit.Value[1:len(lit.Value)-1], '\'')
				if err != nil || tail != "" || r > 255 {
					return nil, fmt.Errorf("line %.40q: bad byte literal", line)
				}
				v = byte(r)
				break
			}
			n, err := strconv.ParseUint(num, 0, 8)
			if err != nil {
				return nil, fmt.Errorf("line %.40q: %v", line, err)
			}
			v = byte(n)
		case "int64":
			n, err := strconv.ParseInt(num, 0, 64)
			if err != nil {
				return nil, fmt.Errorf("line %.40q: %v", line, err)
			}
			v = n
		case "uint16":
			n, err := strconv.ParseUint(num, 0, 16)
			if err != nil {
				return nil, fmt.Errorf("line %.40q: %v", line, err)
			}
			v = uint16(n)
		default:
			return nil, fmt.Errorf("line %.40q: unsupported type %q", line, fun)
		}
		out = append(out, v)
	}
	return out, nil
}

func typesOf(vals []any) string {
	names := make([]string, len(vals))
	for i, v := range vals {
		names[i] = fmt.Sprintf("%T", v)
	}
	return strings.Join(names, " ")
}

// readKnownBugs returns the values of every known-bug input of target.
func readKnownBugs(tb testing.TB, target string) map[string][]any {
	tb.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatalf("regression inputs of %s: %v", target, err)
	}
	out := map[string][]any{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "regress-") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		vals, err := unmarshalCorpus(data)
		if err != nil {
			tb.Fatalf("%s: %v", e.Name(), err)
		}
		out[e.Name()] = vals
	}
	if len(out) == 0 {
		tb.Fatalf("no known-bug inputs for %s", target)
	}
	return out
}
