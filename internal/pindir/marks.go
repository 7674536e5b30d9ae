package pindir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The marks a change leaves in the pin directory while it runs: empty
// directories, since a BPF filesystem holds no regular files. A mark that
// is there when a change takes the lock was left by a change that was
// killed, and tells it to repair first (see the package doc).
const (
	// changingMark is made before a change to the maps or attachments
	// and removed when it is whole.
	changingMark = "changing"
	// removingMark is made before the last unload removes the set, so
	// that a removal killed half-way is completed.
	removingMark = "removing"
)

// marks are the marks found in a pin directory.
type marks struct {
	// changing: a change did not end (either mark is there).
	changing bool
	// removing: it was removing the set.
	removing bool
}

// readMarks reads the marks in dir.
func readMarks(dir string) marks {
	exists := func(m string) bool {
		_, err := os.Stat(filepath.Join(dir, m))
		return err == nil
	}
	removing := exists(removingMark)
	return marks{changing: removing || exists(changingMark), removing: removing}
}

// mark makes the mark name in dir.
func mark(dir, name string) error {
	if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("mark %s as changing: %w", dir, err)
	}
	return nil
}

// unmark removes the marks of a change from dir: the change is whole.
func unmark(dir string) error {
	for _, m := range []string{removingMark, changingMark} {
		if err := os.Remove(filepath.Join(dir, m)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove the mark %s: %w", m, err)
		}
	}
	return nil
}
