package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestUsage: -h and -version answer on stdout with exit 0; a stray word
// ("help") or a bad flag is refused with exit 2 before anything starts.
func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		code      int
		out, errs string
	}{
		{[]string{"-h"}, 0, "kioskbench measures what kioskpayd costs to run", ""},
		{[]string{"-help"}, 0, "Exit codes: 0 measured", ""},
		{[]string{"-version"}, 0, "kioskbench dev\n", ""},
		{[]string{"help"}, 2, "", `unexpected argument "help"`},
		{[]string{"-n"}, 2, "", "flag needs an argument: -n"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.errs) {
			t.Errorf("%v: exit %d\nstdout %q\nstderr %q", tc.args, code, stdout.String(), stderr.String())
		}
	}
}
