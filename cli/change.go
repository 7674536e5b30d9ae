package cli

import (
	"errors"

	"github.com/traffic-meter/traffic_meter/internal/attach"
	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/pindir"
	"github.com/traffic-meter/traffic_meter/internal/savefile"
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

// explain turns an error of the layers below into "problem: fix" for
// people: maps.ErrNotLoaded into notLoaded's error, the errors of fixes
// with their fix appended, any other as it is.
func (c *Context) explain(err error) error {
	if errors.Is(err, maps.ErrNotLoaded) {
		return c.notLoaded()
	}
	return withFix(err)
}

// withFix returns err with its fix from fixes appended, or err itself when
// fixes has none or err has its fix already. A command calls it where it
// adds context after the problem ("...; nothing was imported"), so that
// the fix stays next to the problem.
func withFix(err error) error {
	var fixed *fixedError
	if err == nil || errors.As(err, &fixed) {
		return err
	}
	for _, f := range fixes {
		if fix, ok := f(err); ok {
			return &fixedError{err, fix}
		}
	}
	return err
}

// fixedError is an error with its fix: "problem: fix".
type fixedError struct {
	err error
	fix string
}

func (e *fixedError) Error() string { return e.err.Error() + ": " + e.fix }
func (e *fixedError) Unwrap() error { return e.err }

// fixes is the one table of the errors that the layers below return
// (sentinels and types, never advice) and the fix that cli gives people
// for each: a function that says whether err is its error and the fix.
var fixes = []func(err error) (fix string, ok bool){
	func(err error) (string, bool) {
		var e *pindir.NotBPFFSError
		return "pick a --bpffs-pin directory under a bpffs mount (mount -t bpf bpf DIR)", errors.As(err, &e)
	},
	func(err error) (string, bool) {
		var e *pindir.MountError
		return "mount it with 'mount -t bpf bpf " + pindir.BPFFSRoot + "'", errors.As(err, &e)
	},
	func(err error) (string, bool) {
		return "delete rules, or unload everything and load again with a larger --max-rules", errors.Is(err, maps.ErrFull)
	},
	func(err error) (string, bool) {
		return "delete the rules with --by-interface whose rows keep old attachments, or save, unload everything and load again with a larger --interface-rows", errors.Is(err, maps.ErrRowsFull)
	},
	func(err error) (string, bool) {
		return "delete the rules with --by-interface whose rows keep unloaded attachments (see stats --by-interface)", errors.Is(err, maps.ErrRegistryFull)
	},
	func(err error) (string, bool) {
		return "give it a smaller --hosts N, take the option from other rules (add them again without --hosts), or save, unload everything, load with a larger --host-capacity and restore", errors.Is(err, maps.ErrHostCapacity)
	},
	func(err error) (string, bool) {
		var e *attach.NoInterfaceError
		return "check the name with 'ip link'", errors.As(err, &e)
	},
	func(err error) (string, bool) {
		var e *attach.ForeignXDPError
		if !errors.As(err, &e) {
			return "", false
		}
		return "detach it first with 'ip link set dev " + e.Ifname + " xdp off'", true
	},
	func(err error) (string, bool) {
		var e *maps.OtherVersionError
		if !errors.As(err, &e) {
			return "", false
		}
		return "unload every interface with that version, or remove " + e.Dir + ", then load again", true
	},
	func(err error) (string, bool) {
		var e *kernel.UnsupportedError
		if !errors.As(err, &e) {
			return "", false
		}
		if e.TooOld {
			return "upgrade the kernel", true
		}
		return "use a kernel that has it", true
	},
	func(err error) (string, bool) {
		var e *savefile.VersionError
		return "restore it with the traffic_meter that saved it, or save the counters again", errors.As(err, &e)
	},
}
