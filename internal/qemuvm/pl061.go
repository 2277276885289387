package qemuvm

import (
	"regexp"
	"strconv"
	"time"
)

// Edge is one level change of one PL061 line as qemu saw it: an output the
// guest's kernel drove, or an input qemu changed (the power button).
type Edge struct {
	At    time.Time
	Line  int
	Level int
	Input bool
}

var (
	setOutputRe   = regexp.MustCompile(`setting output (\d) to (\d)`)
	inputChangeRe = regexp.MustCompile(`input (\d) changed to (\d)`)
)

// PL061Edges picks the line changes out of a "pl061_*" trace.
func PL061Edges(events []Event) []Edge {
	var out []Edge
	for _, e := range events {
		var m []string
		input := false
		switch e.Name {
		case "pl061_set_output":
			m = setOutputRe.FindStringSubmatch(e.Args)
		case "pl061_input_change":
			m = inputChangeRe.FindStringSubmatch(e.Args)
			input = true
		}
		if m == nil {
			continue
		}
		line, _ := strconv.Atoi(m[1])
		level, _ := strconv.Atoi(m[2])
		out = append(out, Edge{At: e.At, Line: line, Level: level, Input: input})
	}
	return out
}

// Span is one stretch of a line at one level.
type Span struct {
	From, To time.Time
}

// Len is the span's duration.
func (s Span) Len() time.Duration { return s.To.Sub(s.From) }

// Spans returns the stretches an output line spent at level, each entered
// from the other level (the level the board's reset leaves is not the
// guest's doing) and left again.
func Spans(es []Edge, line, level int) []Span {
	var out []Span
	var start time.Time
	cur := -1
	for _, e := range es {
		if e.Line != line || e.Input {
			continue
		}
		if cur == level && e.Level != level && !start.IsZero() {
			out = append(out, Span{start, e.At})
		}
		if e.Level == level && cur != level && cur != -1 {
			start = e.At
		}
		cur = e.Level
	}
	return out
}

// LevelAt is the last level an output line was driven to before t, or -1.
func LevelAt(es []Edge, line int, t time.Time) int {
	level := -1
	for _, e := range es {
		if e.Line == line && !e.Input && e.At.Before(t) {
			level = e.Level
		}
	}
	return level
}
