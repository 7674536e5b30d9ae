package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/traffic-meter/traffic_meter/attach"
	"github.com/traffic-meter/traffic_meter/maps"
)

// change runs fn as a change of the pin directory: under its exclusive
// lock, after repairing what a killed change left, and between the marks
// that tell the next change whether this one ended (see the package doc).
// With create, a missing pin directory is made first. Whatever happens,
// a pin directory left with neither maps nor attachments is removed.
func (c *Context) change(create bool, fn func(*maps.Lock) error) (err error) {
	l, mounted, err := maps.LockDir(c.Dir, create)
	if mounted {
		c.Notice("mounted the BPF filesystem at /sys/fs/bpf")
	}
	if err != nil {
		return c.explain(err)
	}
	defer l.Unlock()
	defer c.tidy()
	if err := c.repair(l); err != nil {
		return fmt.Errorf("repair what an interrupted command left in %s: %w", c.Dir, err)
	}
	if err := l.Begin(); err != nil {
		return err
	}
	if err := fn(l); err != nil {
		// A change that failed has undone itself: it ended.
		l.End()
		return err
	}
	return l.End()
}

// repair removes what a change that was killed left in the pin directory,
// with a notice for each thing: the pins of attachments that are gone
// (also when nothing was killed: a loaded interface may have been
// deleted), and, after a killed change, an incomplete set of maps, a set
// whose removal did not finish, stats entries without a rule, and our XDP
// programs that have no pin. The exclusive lock must be held.
func (c *Context) repair(l *maps.Lock) error {
	stale, err := attach.Prune(c.Dir)
	if err != nil {
		return err
	}
	c.pruned = stale
	for _, a := range stale {
		c.Notice("%s is gone: removed its attachment's pin", a.Where())
	}
	changing, removing := l.Interrupted()
	if !changing {
		return nil
	}
	live, err := attach.List(c.Dir)
	if err != nil {
		return err
	}
	switch n := maps.Pinned(c.Dir); {
	case n == 0:
		return nil
	case n < len(maps.Names) || removing && len(live) == 0:
		c.Notice("an interrupted command left the maps half made or half removed: removed them")
		return maps.Unpin(c.Dir)
	}
	set, err := maps.Open(c.Dir)
	if err != nil {
		return err
	}
	defer set.Close()
	n, err := set.RemoveOrphans()
	if err != nil {
		return err
	}
	if n > 0 {
		c.Notice("an interrupted command left %d counters without a rule: removed them", n)
	}
	ids, err := set.IDs()
	if err != nil {
		return err
	}
	adopted, err := attach.Adopt(c.Dir, ids)
	for _, a := range adopted {
		c.Notice("found our program on %s without a pin: pinned it", a.Ifname)
	}
	return err
}

// tidy removes the links directory and the pin directory when they are
// empty: a command leaves no empty pin directory behind.
func (c *Context) tidy() {
	os.Remove(attach.LinksDir(c.Dir))
	os.Remove(c.Dir)
}

// read runs fn over the pinned maps, opened read-only under the shared
// lock, so that it sees no change half done. It returns the error of
// notLoaded when nothing is pinned.
func (c *Context) read(fn func(*maps.Set) error) error {
	l, err := maps.RLockDir(c.Dir)
	if err != nil {
		return c.explain(err)
	}
	defer l.Unlock()
	set, err := maps.OpenReadOnly(c.Dir)
	if err != nil {
		return c.explain(err)
	}
	defer set.Close()
	return fn(set)
}

// explain turns maps.ErrNotLoaded into notLoaded's error for people.
func (c *Context) explain(err error) error {
	if errors.Is(err, maps.ErrNotLoaded) {
		return c.notLoaded()
	}
	return err
}
