package maps

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// The marks a change leaves in the pin directory while it runs: empty
// directories, since a BPF filesystem holds no regular files. A mark that
// is there when a change takes the lock was left by a change that was
// killed, and tells it to repair first.
const (
	// changingMark is made before a change to the maps or attachments
	// and removed when it is whole.
	changingMark = "changing"
	// removingMark is made before the last unload removes the set, so
	// that a removal killed half-way is completed.
	removingMark = "removing"
)

// Begin marks the pin directory as being changed, before the first step of
// a change. The lock must be exclusive.
func (l *Lock) Begin() error { return l.mark(changingMark) }

// BeginRemove marks the set as being removed, before its first pin goes.
func (l *Lock) BeginRemove() error { return l.mark(removingMark) }

// End removes the marks: the change is whole. A directory removed by the
// change (the last unload) needs no End.
func (l *Lock) End() error { return unmark(l.dir) }

// unmark removes the marks of a change from dir.
func unmark(dir string) error {
	for _, m := range []string{removingMark, changingMark} {
		if err := os.Remove(filepath.Join(dir, m)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove the mark %s: %w", m, err)
		}
	}
	return nil
}

func (l *Lock) mark(name string) error {
	if err := os.Mkdir(filepath.Join(l.dir, name), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("mark %s as changing: %w", l.dir, err)
	}
	return nil
}

// Interrupted reports the marks that a killed change left: changing, if a
// change did not end, and removing, if it was removing the set.
func (l *Lock) Interrupted() (changing, removing bool) { return interrupted(l.dir) }

func interrupted(dir string) (changing, removing bool) {
	exists := func(m string) bool {
		_, err := os.Stat(filepath.Join(dir, m))
		return err == nil
	}
	removing = exists(removingMark)
	return removing || exists(changingMark), removing
}

// Pinned reports how many of the four maps are pinned in dir: 0 or 4 but
// for the remains of a change that was killed while it created or removed
// the set.
func Pinned(dir string) int {
	n := 0
	for _, name := range Names {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			n++
		}
	}
	return n
}

// RemoveOrphans deletes the stats entries that have no rule: those a change
// that was killed left between writing a rule's stats entry and inserting
// the rule, or between deleting a rule and its stats entry. It returns how
// many it deleted.
func (s *Set) RemoveOrphans() (int, error) {
	n4, err := removeOrphans(s.v4())
	if err != nil {
		return 0, err
	}
	n6, err := removeOrphans(s.v6())
	return n4 + n6, err
}

func removeOrphans[K key](f family[K]) (int, error) {
	rules := make(map[K]bool)
	if err := f.eachRule(func(k K) { rules[k] = true }); err != nil {
		return 0, err
	}
	var orphans []K
	err := readBatches(f.stats, ebpf.MustPossibleCPU(), func(k K, _ []Stats) {
		if !rules[k] {
			orphans = append(orphans, k)
		}
	})
	if err != nil {
		return 0, fmt.Errorf("read stats: %w", err)
	}
	for _, k := range orphans {
		if err := f.stats.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, fmt.Errorf("delete the stats entry of %s, which has no rule: %w", k.Rule(), err)
		}
	}
	return len(orphans), nil
}
