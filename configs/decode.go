package configs

import (
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

// Decoding happens in two steps. go-toml/v2 parses the document into generic
// values (it owns the TOML grammar: syntax, duplicate keys, table
// redefinitions, and reports those with their line). Then table() walks those
// values against the schema structs, field by field, so that every unknown
// key and every wrong type is reported, with its line, instead of stopping at
// the first one as a typed strict decode (Decoder.DisallowUnknownFields) would.

// duration is a schema field holding a Go duration string such as "24h".
type duration time.Duration

// size is a schema field holding a byte count: "16KiB", "8MiB", "1GB", "512"
// or a TOML integer.
type size int64

// timestamp is a time: a TOML date-time, or an RFC 3339 string.
type timestamp time.Time

var (
	durationType = reflect.TypeFor[duration]()
	sizeType     = reflect.TypeFor[size]()
	selectorType = reflect.TypeFor[selector]()
	timeType     = reflect.TypeFor[timestamp]()
)

// decodeDocument decodes data into the schema. It returns nil when the
// document is not valid TOML; other problems are recorded in r and the
// fields they concern keep their zero values.
func (r *report) decodeDocument(data []byte) *fileConfig {
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		p := Problem{File: r.file, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			p.Line, _ = de.Position()
			p.Path = r.pos.tables[p.Line] // "" for a table header
			for _, k := range de.Key() {
				p.Path = joinKey(p.Path, k)
			}
		}
		r.errs = append(r.errs, p)
		return nil
	}
	var fc fileConfig
	r.table("", doc, reflect.ValueOf(&fc).Elem())
	return &fc
}

// table fills the struct dst from the decoded table m (nil when the table is
// absent), applying defaults and reporting unknown keys.
func (r *report) table(path string, m map[string]any, dst reflect.Value) {
	t := dst.Type()
	known := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("toml")
		known = append(known, key)
		p := joinKey(path, key)
		if v, ok := m[key]; ok {
			r.value(p, v, dst.Field(i))
		} else if def, ok := f.Tag.Lookup("default"); ok {
			r.value(p, defaultValue(f.Type, def), dst.Field(i))
		} else if f.Type.Kind() == reflect.Struct {
			r.table(p, nil, dst.Field(i))
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if !slices.Contains(known, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		r.typeErrorf(joinKey(path, k), "unknown key%s", suggest(k, known))
	}
}

// defaultValue converts a `default` tag into the value the file would hold.
func defaultValue(t reflect.Type, def string) any {
	if t.Kind() == reflect.Int {
		n, _ := strconv.ParseInt(def, 10, 64)
		return n
	}
	return def
}

// value stores the decoded value v into dst, checking its type.
func (r *report) value(path string, v any, dst reflect.Value) {
	switch dst.Type() {
	case durationType:
		s, ok := v.(string)
		if !ok {
			r.typeErrorf(path, "expected a duration string such as \"30s\", got %s", tomlType(v))
			return
		}
		d, err := parseDuration(s)
		if err != nil {
			r.typeErrorf(path, "%v", err)
			return
		}
		dst.SetInt(int64(d))
		return
	case sizeType:
		n, err := parseSize(v)
		if err != nil {
			r.typeErrorf(path, "%v", err)
			return
		}
		dst.SetInt(n)
		return
	case timeType:
		var t time.Time
		switch tv := v.(type) {
		case time.Time:
			t = tv
		case string:
			var err error
			if t, err = time.Parse(time.RFC3339, tv); err != nil {
				r.typeErrorf(path, "%q is not an RFC 3339 time such as \"2027-06-01T00:00:00Z\"", tv)
				return
			}
		default:
			r.typeErrorf(path, "expected an RFC 3339 time such as \"2027-06-01T00:00:00Z\", got %s", tomlType(v))
			return
		}
		dst.Set(reflect.ValueOf(timestamp(t)))
		return
	case selectorType:
		m, ok := v.(map[string]any)
		if !ok {
			r.typeErrorf(path, "expected an inline table such as { valid_certificate = true }, got %s", tomlType(v))
			return
		}
		dst.Set(reflect.ValueOf(selector(m)))
		return
	}
	want, ok := "", false
	switch dst.Kind() {
	case reflect.Pointer:
		nv := reflect.New(dst.Type().Elem())
		r.value(path, v, nv.Elem())
		if !r.bad(path) {
			dst.Set(nv)
		}
		return
	case reflect.String:
		want = "a string"
		var s string
		if s, ok = v.(string); ok {
			dst.SetString(s)
		}
	case reflect.Bool:
		want = "a boolean (true or false)"
		var b bool
		if b, ok = v.(bool); ok {
			dst.SetBool(b)
		}
	case reflect.Int:
		want = "an integer"
		var n int64
		if n, ok = v.(int64); ok {
			if int64(int(n)) != n {
				r.typeErrorf(path, "integer %d is out of range", n)
				return
			}
			dst.SetInt(n)
		}
	case reflect.Slice:
		want = "an array"
		var arr []any
		if arr, ok = v.([]any); ok {
			s := reflect.MakeSlice(dst.Type(), len(arr), len(arr))
			for i, e := range arr {
				r.value(indexPath(path, i), e, s.Index(i))
			}
			dst.Set(s)
		}
	case reflect.Struct:
		want = "a table"
		var m map[string]any
		if m, ok = v.(map[string]any); ok {
			r.table(path, m, dst)
		}
	}
	if !ok {
		r.typeErrorf(path, "expected %s, got %s", want, tomlType(v))
	}
}

// tomlType names the TOML type of a decoded value.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case int64:
		return "integer"
	case float64:
		return "float"
	case []any:
		return "array"
	case map[string]any:
		return "table"
	case time.Time, toml.LocalDateTime:
		return "date-time"
	case toml.LocalDate:
		return "date"
	case toml.LocalTime:
		return "time"
	}
	return fmt.Sprintf("%T", v)
}

// parseDuration parses a Go duration string; negative durations are refused.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use Go units such as \"90s\", \"15m\" or \"24h\")", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return d, nil
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1e3, "kib": 1 << 10,
	"mb": 1e6, "mib": 1 << 20,
	"gb": 1e9, "gib": 1 << 30,
	"tb": 1e12, "tib": 1 << 40,
}

// parseSize parses a byte count: a non-negative TOML integer, or a string of
// digits with an optional unit (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB; any
// case).
func parseSize(v any) (int64, error) {
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return 0, fmt.Errorf("negative size %d", v)
		}
		return v, nil
	case string:
		s := strings.TrimSpace(v)
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		mult, ok := sizeUnits[strings.ToLower(strings.TrimSpace(s[i:]))]
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if !ok || err != nil {
			return 0, fmt.Errorf("invalid size %q (use bytes or units such as \"16KiB\", \"8MiB\" or \"1GB\")", v)
		}
		if n > math.MaxInt64/mult {
			return 0, fmt.Errorf("size %q is too large", v)
		}
		return n * mult, nil
	}
	return 0, fmt.Errorf("expected a size such as \"16KiB\" or an integer of bytes, got %s", tomlType(v))
}

// suggest returns ` (did you mean "x"?)` for the known key closest to k, if
// one is within two edits.
func suggest(k string, known []string) string {
	best, bestD := "", 3
	for _, c := range known {
		if d := editDistance(k, c); d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b (bytes), capped
// for long inputs so that garbage keys cost little.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
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
