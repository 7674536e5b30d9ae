package pindir

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/attach"
	"github.com/traffic-meter/traffic_meter/maps"
)

// Dir is a pin directory under a change, with its exclusive lock held:
// what the function given to Change gets.
type Dir struct {
	// Path is the pin directory.
	Path string
	// Repaired is what the repair at the start of the change did.
	Repaired Repaired
}

// Report is what a change did before its own work. The report function
// given to Change gets it once: before fn runs, or when the change fails
// before that.
type Report struct {
	// Mounted is where the change mounted the BPF filesystem, if it did.
	Mounted string
	Repaired
}

// Repaired is what a repair did (see the package doc).
type Repaired struct {
	// Pruned are the attachments that were gone (their interface, their
	// network namespace, or our program on the interface), whose pins it
	// removed. It prunes at every change, killed one or not.
	Pruned []attach.Attachment
	// Unpinned says that it removed a set of maps that a killed change
	// left half made or half removed.
	Unpinned bool
	// Orphans is how many stats entries and per-interface rows without a
	// rule (or, rows, without the option) it deleted.
	Orphans int
	// Adopted are our XDP programs that it found attached without a pin,
	// and pinned.
	Adopted []attach.Attachment
}

// Change runs fn as a change of the pin directory dir, in the order of
// the package doc: under the exclusive lock, after repairing what a
// killed change left, and between the marks that tell the next change
// whether this one ended. With create, a missing dir is made first (and
// the BPF filesystem mounted, if need be). Whatever happens, a pin
// directory left with neither maps nor attachments is removed. report
// is told what was done before fn.
//
// fn must leave the directory whole, or undo itself and return an error:
// either way the change has ended. An error of ending it is joined to
// fn's.
func Change(dir string, create bool, report func(Report), fn func(*Dir) error) error {
	var r Report
	l, mounted, err := Exclusive(dir, create)
	if mounted {
		r.Mounted = BPFFSRoot
	}
	if err != nil {
		report(r)
		return err
	}
	defer l.Unlock()
	defer tidy(dir)
	r.Repaired, err = repair(dir)
	report(r)
	if err != nil {
		return fmt.Errorf("repair what an interrupted command left in %s: %w", dir, err)
	}
	if err := mark(dir, changingMark); err != nil {
		return err
	}
	if err := beginRules(dir); err != nil {
		return err
	}
	if err := fn(&Dir{Path: dir, Repaired: r.Repaired}); err != nil {
		if readMarks(dir).removing {
			// A removal of the set stopped half-way (RemoveIfUnused):
			// the marks stay, so that the next change completes it, as
			// after a kill.
			return err
		}
		if endErr := end(dir); endErr != nil {
			return fmt.Errorf("%w; and ending the change failed: %w", err, endErr)
		}
		return err
	}
	return end(dir)
}

// beginRules and endRules are the steps of the generation of the rules
// around a change (maps.BeginChange, maps.EndChange). The tests of
// change's order, over pin directories of plain files, leave them out.
var beginRules, endRules = maps.BeginChange, maps.EndChange

// end ends a change that left the directory whole: the generation of the
// rules even again, then the marks removed.
func end(dir string) error {
	if err := endRules(dir); err != nil {
		return err
	}
	return unmark(dir)
}

// found is what a repair finds in the pin directory once it has pruned
// the pins of attachments that are gone: all its decision needs.
type found struct {
	marks
	// pinned is how many maps of the set are pinned, of len(maps.Names).
	pinned int
	// live is how many attachments are there.
	live int
}

// fix is what a repair does about what it found.
type fix int

const (
	// leave: no change was killed, or it left no maps.
	leave fix = iota
	// unpinSet: a killed change left the set half made, or half removed
	// (the mark "removing" and no attachment left): remove its pins.
	unpinSet
	// mendSet: a killed change left the set whole: delete the stats
	// entries without a rule, and pin our programs attached without a pin.
	mendSet
)

// decide is the repair's decision.
func decide(f found) fix {
	switch {
	case !f.changing || f.pinned == 0:
		return leave
	case f.pinned < len(maps.Names) || f.removing && f.live == 0:
		return unpinSet
	}
	return mendSet
}

// repair removes what a change that was killed left in dir and returns
// what it did, also when it fails half-way: the pins of attachments that
// are gone (also when nothing was killed: a loaded interface may have
// been deleted), and, after a killed change, what decide says. The
// exclusive lock must be held.
func repair(dir string) (r Repaired, err error) {
	if r.Pruned, err = attach.Prune(dir); err != nil {
		return r, err
	}
	m := readMarks(dir)
	if !m.changing {
		return r, nil
	}
	// The maps of another layout are not judged by their number.
	if err := maps.CheckLayout(dir); err != nil {
		return r, err
	}
	live, err := attach.List(dir)
	if err != nil {
		return r, err
	}
	switch decide(found{m, maps.Pinned(dir), len(live)}) {
	case unpinSet:
		if err := maps.Unpin(dir); err != nil {
			return r, err
		}
		r.Unpinned = true
	case mendSet:
		r.Orphans, r.Adopted, err = mend(dir)
	}
	return r, err
}

// mend deletes the stats entries without a rule of the set in dir and
// pins our programs attached without a pin.
func mend(dir string) (orphans int, adopted []attach.Attachment, err error) {
	set, err := maps.Open(dir)
	if err != nil {
		return 0, nil, err
	}
	defer set.Close()
	if orphans, err = set.RemoveOrphans(); err != nil {
		return 0, nil, err
	}
	if adopted, err = adopt(set); err != nil {
		return orphans, adopted, err
	}
	rows, err := set.RemoveOrphanRows()
	if err != nil {
		return orphans, adopted, err
	}
	tables, err := set.RemoveHostOrphans()
	if err != nil {
		return orphans + rows, adopted, err
	}
	return orphans + rows + tables, adopted, PruneRegistry(set)
}

// PruneRegistry removes from the registry of attachments of set those
// that are gone and whose number no per-interface row carries
// (maps.Set.PruneAttachments): after an unload, and in a repair, where a
// load killed or failed after recording its attachment left one.
func PruneRegistry(set *maps.Set) error {
	live, err := attach.List(set.Dir)
	if err != nil {
		return err
	}
	_, err = set.PruneAttachments(attach.Loaded(live))
	return err
}

// Adopt pins our XDP programs attached without a pin on the interfaces of
// the caller's network namespace: those that count into the set of maps
// pinned in d (see attach.Adopt). It returns what it pinned.
func (d *Dir) Adopt() ([]attach.Attachment, error) {
	set, err := maps.Open(d.Path)
	if err != nil {
		return nil, err
	}
	defer set.Close()
	return adopt(set)
}

// adopt pins the programs attached without a pin that use the maps of
// set.
func adopt(set *maps.Set) ([]attach.Attachment, error) {
	ids, err := set.IDs()
	if err != nil {
		return nil, err
	}
	return attach.Adopt(set.Dir, ids)
}

// RemoveIfUnused removes the set of maps, the links directory and the pin
// directory when no attachment is left, and reports whether it did; the
// error says why it could not. A kill or an error half-way leaves the
// mark "removing", and the next change completes the removal.
func (d *Dir) RemoveIfUnused() (removed bool, err error) {
	if live, err := attach.List(d.Path); err != nil || len(live) > 0 {
		return false, err
	}
	links := attach.LinksDir(d.Path)
	if err := os.Remove(links); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("remove %s: %w", links, err)
	}
	if err := mark(d.Path, removingMark); err != nil {
		return false, err
	}
	if err := maps.Unpin(d.Path); err != nil {
		return false, err
	}
	if err := unmark(d.Path); err != nil {
		return false, err
	}
	if err := os.Remove(d.Path); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		return false, fmt.Errorf("remove pin directory: %w", err)
	}
	return true, nil
}

// tidy removes the links directory and the pin directory dir if they are
// empty: a change leaves no empty pin directory behind. That they are not
// empty is no error, so that failing to remove them is none.
func tidy(dir string) {
	os.Remove(attach.LinksDir(dir))
	os.Remove(dir)
}
