// Package readtest holds the checks that the tests of traffic_meter's two
// JSON readers, rule.ReadJSON (import files) and savefile.Read (saved
// counters), share. Both read an array of items, skip an invalid item with
// a warning that gives its index, and fail on a bad file with an error;
// every warning and error is one line.
package readtest

import (
	"fmt"
	"strings"
	"testing"
)

// Warnings collects a reader's warnings, each as "index: reason".
type Warnings []string

// Warn is the reader's warn function.
func (w *Warnings) Warn(i int, reason error) {
	*w = append(*w, fmt.Sprintf("%d: %v", i, reason))
}

// Check fails t unless the warnings are want's: "index: piece of the
// reason" items separated by "; ", or "" for none.
func (w Warnings) Check(t testing.TB, want string) {
	t.Helper()
	var items []string
	if want != "" {
		items = strings.Split(want, "; ")
	}
	if len(w) != len(items) {
		t.Fatalf("warnings\n%s\nwant\n%s", strings.Join(w, "\n"), strings.Join(items, "\n"))
	}
	for i, item := range items {
		idx, piece, _ := strings.Cut(item, ": ")
		if !strings.HasPrefix(w[i], idx+": ") || !strings.Contains(w[i], piece) {
			t.Errorf("warning %q, want %q", w[i], item)
		}
	}
}

// CheckErr checks a reader's error: one that says want, when want is not
// empty, else none. It reports whether the reader failed as wanted.
func CheckErr(t testing.TB, err error, want string) (failed bool) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one saying %q", err, want)
	}
	return true
}

// OrderedWarn returns a warn function, for fuzzing a reader, that fails t
// when a warning comes for an item before or at the last one warned
// about, or its reason is more than one line.
func OrderedWarn(t testing.TB) func(int, error) {
	last := -1
	return func(i int, reason error) {
		if i <= last {
			t.Fatalf("warning for item %d after item %d", i, last)
		}
		last = i
		OneLine(t, reason)
	}
}

// OneLine fails t when err's message is more than one line.
func OneLine(t testing.TB, err error) {
	t.Helper()
	if strings.ContainsAny(err.Error(), "\n\r") {
		t.Fatalf("multi-line %q", err)
	}
}
