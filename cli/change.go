package cli

import (
	"errors"
	"fmt"

	"github.com/traffic-meter/traffic_meter/internal/pindir"
	"github.com/traffic-meter/traffic_meter/maps"
)

// change runs fn as a change of the pin directory (pindir.Change), with a
// notice for each thing done before fn: mounting bpffs and the repair.
// With create, a missing pin directory is made first.
func (c *Context) change(create bool, fn func(*pindir.Dir) error) error {
	return c.explain(pindir.Change(c.Dir, create, c.report, fn))
}

// report tells, with a notice for each thing, what a change did before
// its own work.
func (c *Context) report(r pindir.Report) {
	if r.Mounted != "" {
		c.Notice("mounted the BPF filesystem at %s", r.Mounted)
	}
	for _, a := range r.Pruned {
		c.Notice("%s is gone: removed its attachment's pin", a.Where())
	}
	if r.Unpinned {
		c.Notice("an interrupted command left the maps half made or half removed: removed them")
	}
	if r.Orphans > 0 {
		c.Notice("an interrupted command left %d counters without a rule: removed them", r.Orphans)
	}
	for _, a := range r.Adopted {
		c.Notice("found our program on %s without a pin: pinned it", a.Ifname)
	}
}

// read runs fn over the pinned maps, opened read-only under the shared
// lock (pindir.Read). It returns the error of notLoaded when nothing is
// pinned.
func (c *Context) read(fn func(*maps.Set) error) error {
	return c.explain(pindir.Read(c.Dir, fn))
}

// explain turns the errors of the layers below that people can fix into
// "problem: fix".
func (c *Context) explain(err error) error {
	var notBPFFS *pindir.NotBPFFSError
	var mount *pindir.MountError
	switch {
	case errors.Is(err, maps.ErrNotLoaded):
		return c.notLoaded()
	case errors.As(err, &notBPFFS):
		return fmt.Errorf("%w: pick a --bpffs-pin directory under a bpffs mount (mount -t bpf bpf DIR)", err)
	case errors.As(err, &mount):
		return fmt.Errorf("%w: mount it with 'mount -t bpf bpf %s'", err, pindir.BPFFSRoot)
	}
	return err
}
