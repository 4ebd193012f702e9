package configs

import (
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// positions maps key paths ("applications[1].policies[0].include[2]") to the
// 1-based line where they are defined. It is built from go-toml's unstable
// parser, which keeps byte ranges that the decoded values lose.
type positions struct {
	lines    map[string]int
	newlines []int // byte offsets of every '\n', ascending
	// tables maps the line of each top-level key-value to the path of the
	// table it is in: go-toml reports keys relative to it.
	tables map[int]string
	// keys counts the keys defined directly in each table; crowded is set
	// when one has more than maxTableKeys of them, and crowdedTable names it.
	keys         map[string]int
	crowded      bool
	crowdedTable string
	crowdedLine  int
}

// maxTableKeys bounds the keys of one table. No table of the schema has more
// than a few dozen; the bound keeps garbage files from hitting go-toml's
// duplicate-key tracking, which is quadratic in the keys of one table.
const maxTableKeys = 1000

// count records one more key, at line, in table.
func (pos *positions) count(table string, line int) {
	pos.keys[table]++
	if pos.keys[table] > maxTableKeys && !pos.crowded {
		pos.crowded, pos.crowdedTable, pos.crowdedLine = true, table, line
	}
}

// scanPositions walks every expression of data. It stops quietly at a
// syntax error: the decoder reports that error with its own position.
func scanPositions(data []byte) *positions {
	pos := &positions{lines: map[string]int{}, tables: map[int]string{}, keys: map[string]int{}}
	for i, c := range data {
		if c == '\n' {
			pos.newlines = append(pos.newlines, i)
		}
	}
	var p unstable.Parser
	p.Reset(data)
	arrays := map[string]int{} // array-of-tables path → elements so far
	table := ""
	for !pos.crowded && p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.KeyValue:
			if it := e.Key(); it.Next() {
				if l := pos.nodeLine(it.Node(), 0); l > 0 {
					if _, seen := pos.tables[l]; !seen {
						pos.tables[l] = table
					}
				}
			}
			pos.keyValue(table, e)
		case unstable.Table, unstable.ArrayTable:
			table = pos.header(e, arrays)
		}
	}
	return pos
}

// header records a [table] or [[array.table]] header and returns the path of
// the table it opens. Each prefix that names an array of tables refers to its
// last element, as TOML specifies.
func (pos *positions) header(e *unstable.Node, arrays map[string]int) string {
	var keys []*unstable.Node
	for it := e.Key(); it.Next(); {
		keys = append(keys, it.Node())
	}
	path := ""
	for i, k := range keys {
		if i == len(keys)-1 && e.Kind == unstable.Table {
			pos.count(path, pos.nodeLine(k, 0))
		}
		path = joinKey(path, string(k.Data))
		line := pos.nodeLine(k, 0)
		if i == len(keys)-1 && e.Kind == unstable.ArrayTable {
			n := arrays[path]
			arrays[path] = n + 1
			pos.set(path, line)
			path = indexPath(path, n)
		} else if n, ok := arrays[path]; ok {
			path = indexPath(path, n-1)
		}
		pos.set(path, line)
	}
	return path
}

// keyValue records a (possibly dotted) key and everything inside its value.
func (pos *positions) keyValue(table string, kv *unstable.Node) {
	pos.count(table, pos.nodeLine(kv, 0))
	path := table
	line := 0
	for it := kv.Key(); it.Next(); {
		k := it.Node()
		path = joinKey(path, string(k.Data))
		line = pos.nodeLine(k, line)
		pos.set(path, line)
	}
	pos.value(path, kv.Value(), line)
}

func (pos *positions) value(path string, v *unstable.Node, line int) {
	switch v.Kind {
	case unstable.Array:
		i := 0
		for it := v.Children(); it.Next(); {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			p := indexPath(path, i)
			l := pos.nodeLine(c, line)
			pos.set(p, l)
			pos.value(p, c, l)
			i++
		}
	case unstable.InlineTable:
		for it := v.Children(); it.Next(); {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				pos.keyValue(path, c)
			}
		}
	}
}

// nodeLine returns the line where n starts: its own range if it has one
// (arrays do not), else its first child's, else fallback.
func (pos *positions) nodeLine(n *unstable.Node, fallback int) int {
	for depth := 0; n != nil && depth < 64; depth++ {
		if n.Raw.Length > 0 {
			return sort.SearchInts(pos.newlines, int(n.Raw.Offset)) + 1
		}
		n = n.Child()
	}
	return fallback
}

func (pos *positions) set(path string, line int) {
	if _, ok := pos.lines[path]; !ok && line > 0 {
		pos.lines[path] = line
	}
}

// line returns the line of path, or of its nearest recorded ancestor (a
// missing key is reported on its table's header), or 0.
func (pos *positions) line(path string) int {
	for path != "" {
		if l, ok := pos.lines[path]; ok {
			return l
		}
		path = parentPath(path)
	}
	return 0
}

// parentPath strips the last ".key" or "[i]" of path. Quoted keys that hold
// dots may be cut in the wrong place; the result is then only a less precise
// line.
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

// joinKey appends key to path; keys that are not bare TOML keys are quoted.
func joinKey(path, key string) string {
	if !isBareKey(key) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func indexPath(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

func isBareKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
