package configs

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Problem is one error or warning about a configuration file. Its String form
// is what operators see:
//
//	fleetgate.toml:31: applications[1].policies[0].include[2]: unknown selector "comon_name"
//
// The line is left out when it is unknown (0) and the path when the problem
// concerns the whole file.
type Problem struct {
	// File is the file name as given to Load or Parse.
	File string
	// Line is the 1-based line of the offending key or value; for a missing
	// key, the line of the table that should hold it; 0 when unknown.
	Line int
	// Path is the key path with array indexes, such as
	// "applications[1].policies[0].include[2]"; "" for the whole file.
	Path string
	// Msg says what is wrong, without the location.
	Msg string
}

// String formats the problem as "file:line: path: msg".
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	if p.Path != "" {
		b.WriteString(": ")
		b.WriteString(p.Path)
	}
	b.WriteString(": ")
	b.WriteString(p.Msg)
	return b.String()
}

// Errors is the error Load and Parse return when a file has problems. It
// holds every problem found, not just the first, sorted by line, and the
// warnings found on the way.
type Errors struct {
	Problems []Problem
	Warnings []Problem
}

// Error returns one problem per line, in file order.
func (e *Errors) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// report collects the problems of one load. Paths that had a decoding
// (type) error are remembered so that later checks do not report a second,
// derived problem at the same place.
type report struct {
	file     string
	pos      *positions
	errs     []Problem
	warns    []Problem
	typeBad  map[string]bool
	problems map[string]bool // "path\x00msg" already reported
}

func newReport(file string, pos *positions) *report {
	return &report{file: file, pos: pos, typeBad: map[string]bool{}, problems: map[string]bool{}}
}

func (r *report) problem(path, format string, args ...any) Problem {
	return Problem{File: r.file, Line: r.pos.line(path), Path: path, Msg: fmt.Sprintf(format, args...)}
}

// errorf records an error at path, unless path already had a type error or
// the same message was already reported there.
func (r *report) errorf(path, format string, args ...any) {
	if r.typeBad[path] {
		return
	}
	p := r.problem(path, format, args...)
	if key := path + "\x00" + p.Msg; !r.problems[key] {
		r.problems[key] = true
		r.errs = append(r.errs, p)
	}
}

// typeErrorf records a decoding error at path and marks the path bad.
func (r *report) typeErrorf(path, format string, args ...any) {
	r.errorf(path, format, args...)
	r.typeBad[path] = true
}

// warnf records a warning at path.
func (r *report) warnf(path, format string, args ...any) {
	r.warns = append(r.warns, r.problem(path, format, args...))
}

// bad reports whether path already has a type error.
func (r *report) bad(path string) bool { return r.typeBad[path] }

// result sorts the problems and returns them as an *Errors, or a nil error
// (not a nil *Errors) when there is none.
func (r *report) result() error {
	sortProblems(r.errs)
	sortProblems(r.warns)
	if len(r.errs) == 0 {
		return nil
	}
	return &Errors{Problems: r.errs, Warnings: r.warns}
}

func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if c := cmp.Compare(a.Line, b.Line); c != 0 {
			return c
		}
		return cmp.Compare(a.Path, b.Path)
	})
}
