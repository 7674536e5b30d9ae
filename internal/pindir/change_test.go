package pindir

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/attach"
	"github.com/traffic-meter/traffic_meter/maps"
)

// The tests in this file act on a fake pin directory: an ordinary
// directory in which empty files stand for the pins of the maps. They
// need neither root nor a BPF filesystem, and reach every repair but the
// mending of a whole set, which opens the maps.

// The pin directories of these tests hold plain files, not maps: no
// generation to bump (tests/crash_test.go checks it on real maps).
func init() {
	noMaps := func(string) error { return nil }
	beginRules, endRules = noMaps, noMaps
}

// fakeDir makes a pin directory holding the marks and the first pinned
// of the maps' pins, as a killed change may leave it.
func fakeDir(t *testing.T, m []string, pinned int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pins")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range m {
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range maps.Names[:pinned] {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// entries lists what is in dir; nil if dir is gone.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestMarks checks that the marks read back as made and go on unmark.
func TestMarks(t *testing.T) {
	dir := t.TempDir()
	steps := []struct {
		do   func() error
		want marks
	}{
		{func() error { return nil }, marks{}},
		{func() error { return mark(dir, changingMark) }, marks{changing: true}},
		{func() error { return mark(dir, changingMark) }, marks{changing: true}}, // twice is once
		{func() error { return mark(dir, removingMark) }, marks{changing: true, removing: true}},
		{func() error { return unmark(dir) }, marks{}},
		{func() error { return mark(dir, removingMark) }, marks{changing: true, removing: true}}, // removing alone
		{func() error { return unmark(dir) }, marks{}},
		{func() error { return unmark(dir) }, marks{}}, // nothing to remove
	}
	for i, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := readMarks(dir); got != s.want {
			t.Fatalf("step %d: marks %+v, want %+v", i, got, s.want)
		}
	}
}

// TestChangeRepairs runs a change over what kills leave and checks what
// its repair reports and what is left, during the change and after it.
func TestChangeRepairs(t *testing.T) {
	all := len(maps.Names)
	tests := []struct {
		name   string
		marks  []string
		pinned int
		want   Repaired
		// during is what fn sees; after, what is left once the change ends.
		during, after []string
	}{
		{"nothing to repair", nil, all, Repaired{},
			append([]string{changingMark}, maps.Names...), maps.Names},
		{"no mark, part of a set: left", nil, 2, Repaired{},
			append([]string{changingMark}, maps.Names[:2]...), maps.Names[:2]},
		{"a mark alone", []string{changingMark}, 0, Repaired{},
			[]string{changingMark}, nil},
		{"killed creating the set", []string{changingMark}, 3, Repaired{Unpinned: true},
			[]string{changingMark}, nil},
		{"killed removing the set", []string{removingMark, changingMark}, all, Repaired{Unpinned: true},
			[]string{removingMark, changingMark}, nil},
		{"killed removing the set, half unpinned", []string{removingMark}, 1, Repaired{Unpinned: true},
			[]string{removingMark, changingMark}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := fakeDir(t, tt.marks, tt.pinned)
			var reports []Report
			var during []string
			err := Change(dir, false, func(r Report) { reports = append(reports, r) }, func(d *Dir) error {
				if d.Path != dir {
					t.Errorf("Path %s, want %s", d.Path, dir)
				}
				during = entries(t, dir)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(reports) != 1 || reports[0].Mounted != "" || !equalRepaired(reports[0].Repaired, tt.want) {
				t.Errorf("reports %+v, want one of %+v", reports, tt.want)
			}
			if !sameNames(during, tt.during) {
				t.Errorf("during the change: %v, want %v", during, tt.during)
			}
			if got := entries(t, dir); !sameNames(got, tt.after) {
				t.Errorf("after the change: %v, want %v", got, tt.after)
			}
		})
	}
}

func equalRepaired(a, b Repaired) bool {
	return len(a.Pruned) == len(b.Pruned) && len(a.Adopted) == len(b.Adopted) && a.Unpinned == b.Unpinned && a.Orphans == b.Orphans
}

func sameNames(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestChangeFails checks that a failed change ends (its mark goes), that
// an error of ending it is returned with fn's, and that a directory that
// is not there is maps.ErrNotLoaded without create.
func TestChangeFails(t *testing.T) {
	none := func(Report) {}
	failed := errors.New("failed")

	dir := fakeDir(t, nil, len(maps.Names))
	if err := Change(dir, false, none, func(*Dir) error { return failed }); !errors.Is(err, failed) {
		t.Fatalf("got %v, want fn's error", err)
	}
	if m := readMarks(dir); m.changing {
		t.Fatal("a failed change left its mark")
	}

	// fn leaves the mark impossible to remove: its error, or both, come
	// back, on one line.
	for _, fnErr := range []error{nil, failed} {
		dir := fakeDir(t, nil, 0)
		err := Change(dir, false, none, func(*Dir) error {
			if err := os.WriteFile(filepath.Join(dir, changingMark, "x"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return fnErr
		})
		if err == nil || !strings.Contains(err.Error(), "remove the mark changing") || strings.Contains(err.Error(), "\n") ||
			fnErr != nil && !errors.Is(err, fnErr) {
			t.Fatalf("a change returning %v that cannot end: %q", fnErr, err)
		}
	}

	missing := filepath.Join(t.TempDir(), "none")
	called := false
	err := Change(missing, false, func(Report) { called = true }, func(*Dir) error { return nil })
	if !errors.Is(err, maps.ErrNotLoaded) || !called {
		t.Fatalf("a missing directory: %v (reported: %v), want maps.ErrNotLoaded, reported", err, called)
	}
}

// TestRemoveIfUnused checks the removal of the last unload, on a fake
// set with no attachment.
func TestRemoveIfUnused(t *testing.T) {
	dir := fakeDir(t, nil, len(maps.Names))
	if err := os.Mkdir(attach.LinksDir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	var removed bool
	err := Change(dir, false, func(Report) {}, func(d *Dir) (err error) {
		removed, err = d.RemoveIfUnused()
		return err
	})
	if err != nil || !removed {
		t.Fatalf("removed %v, %v", removed, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the pin directory is left: %v", entries(t, dir))
	}

	// Something it does not know in links/: it says why it cannot.
	dir = fakeDir(t, nil, len(maps.Names))
	if err := os.MkdirAll(filepath.Join(attach.LinksDir(dir), "foreign"), 0o700); err != nil {
		t.Fatal(err)
	}
	err = Change(dir, false, func(Report) {}, func(d *Dir) (err error) {
		removed, err = d.RemoveIfUnused()
		return err
	})
	if err == nil || removed || !strings.Contains(err.Error(), "remove "+attach.LinksDir(dir)) {
		t.Fatalf("removed %v, %v; want an error naming links/", removed, err)
	}
	// The failed change took its marks with it; the set stays.
	if got := entries(t, dir); !sameNames(got, append([]string{"links"}, maps.Names...)) {
		t.Fatalf("after the failed removal: %v", got)
	}
}

// TestRemovalStopped checks that a removal of the set that fails half-way
// keeps its marks, and that the next change completes it, as after a kill.
func TestRemovalStopped(t *testing.T) {
	dir := fakeDir(t, nil, len(maps.Names))
	// The third map's pin cannot be removed: a directory with a file in it.
	stuck := filepath.Join(dir, maps.Names[2])
	if err := os.Remove(stuck); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(stuck, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := Change(dir, false, func(Report) {}, func(d *Dir) error {
		_, err := d.RemoveIfUnused()
		return err
	})
	if err == nil {
		t.Fatal("the removal of a set whose pin cannot go succeeded")
	}
	if m := readMarks(dir); !m.removing {
		t.Fatalf("the stopped removal left marks %+v, want removing", m)
	}
	// Once the pin can go, the next change completes the removal.
	if err := os.RemoveAll(filepath.Join(stuck, "x")); err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := Change(dir, false, func(got Report) { r = got }, func(*Dir) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if !r.Unpinned {
		t.Errorf("the next change did not complete the removal: %+v", r)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("after the next change: %v, want nothing", got)
	}
}
