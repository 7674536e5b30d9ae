package cli

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/attach"
	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/pindir"
	"github.com/traffic-meter/traffic_meter/internal/textfmt"
	"github.com/traffic-meter/traffic_meter/maps"
	"github.com/traffic-meter/traffic_meter/prog"
)

// Capacity is the flags of the commands that may create the maps.
type Capacity struct {
	MaxRules      uint32 `name:"max-rules" default:"${default_max_rules}" placeholder:"N" help:"Rules per address family the maps hold, when this command creates them."`
	Prealloc      bool   `name:"prealloc" help:"When this command creates the maps, preallocate the stats tables: a first import of many rules runs several times faster, for kernel memory reserved up front whether rules exist or not, about 90 + 32 x (possible CPUs) bytes per rule of --max-rules and family (291 MiB at the default capacity on 2 CPUs, 4.0 GiB on 64, 7.8 GiB on 128). Choose it when many rules are imported often and the memory is to spare; not for a large --max-rules on a machine of many CPUs. See docs/prealloc.md."`
	CacheSize     uint32 `name:"cache-size" default:"${default_cache_size}" placeholder:"N" help:"Addresses whose rule lookup each address family's cache keeps per CPU, a power of two, when this command creates the maps: 48 bytes per address, CPU and both families (${default_cache_size}: 384 KiB per CPU, 48 MiB on 128 CPUs)."`
	InterfaceRows uint32 `name:"interface-rows" default:"${default_interface_rows}" placeholder:"N" help:"Per-interface rows (a rule with --by-interface and an attachment that counted it) each address family's table holds, when this command creates the maps: a row takes memory only once made, about 72 (IPv4) or 80 (IPv6) + 32 x (possible CPUs) bytes; a frame that finds the table full counts in its rule's remainder, and status shows it."`
	HostCapacity  uint32 `name:"host-capacity" default:"${default_host_capacity}" placeholder:"N" help:"Host entries that the rules counted per host (add --hosts N) may hold together, per address family, when this command creates the maps: the sum of their N. Reserved up front: 16 bytes per entry rounded up to a power of two (16 MiB per family at ${default_host_capacity}); a host entry takes about 90 + 32 x (possible CPUs) bytes when it is used."`
}

// capacity is what the flags ask the maps to be created with.
func (cp Capacity) capacity() maps.Capacity {
	return maps.Capacity{MaxRules: cp.MaxRules, Prealloc: cp.Prealloc, CacheSize: cp.CacheSize, InterfaceRows: cp.InterfaceRows, HostCapacity: cp.HostCapacity}
}

// openOrCreate opens the maps, creating them when missing (or taking
// them from spare, see spareMaps), with the lock held.
func (c *Context) openOrCreate(cp Capacity, spare *maps.Set) (*maps.Set, error) {
	if cp.MaxRules == 0 {
		return nil, errors.New("--max-rules 0 makes maps that hold nothing: give at least 1")
	}
	if cp.InterfaceRows == 0 {
		return nil, errors.New("--interface-rows 0 makes tables that hold no row: give at least 1")
	}
	if err := maps.CheckCacheSize(cp.CacheSize); err != nil {
		return nil, fmt.Errorf("--cache-size %w", err)
	}
	if cp.HostCapacity == 0 {
		return nil, errors.New("--host-capacity 0 makes maps that hold no host: give at least 1")
	}
	return maps.OpenOrCreate(c.Dir, cp.capacity(), spare)
}

// spareMaps starts creating, in the background, the maps that a command
// which reads a file first will create, when it will: with --prealloc and
// no maps pinned. The kernel takes seconds to create preallocated tables
// (2.4 s of system time at 1,000,000 rules per family on 2 CPUs), as long
// as the reading of a large file, so both run at once on different CPUs.
// The maps are not pinned: nothing shows of them unless withMaps pins
// them. wait returns them, or nil when none were made (or making them
// failed: then withMaps creates them, and says why it cannot); the
// caller closes them.
func (c *Context) spareMaps(cp Capacity) (wait func() *maps.Set) {
	if !cp.Prealloc || cp.MaxRules == 0 || maps.Pinned(c.Dir) > 0 {
		return func() *maps.Set { return nil }
	}
	made := make(chan *maps.Set, 1)
	go func() {
		s, _ := maps.Create(cp.capacity())
		made <- s
	}()
	return sync.OnceValue(func() *maps.Set { return <-made })
}

// withMaps runs change over the maps, creating them first when there are
// none. When change fails, the maps this call created are removed again,
// so that a failed command leaves nothing behind; when it succeeds, a
// notice tells of maps created, with the memory that preallocated stats
// tables reserve. --prealloc on maps that exist changes nothing, as
// --max-rules does not, but says so when their stats tables are not
// preallocated. The maps missing are taken from spare when it is not nil
// (see spareMaps). It runs in the change d.
func (c *Context) withMaps(d *pindir.Dir, cp Capacity, spare *maps.Set, change func(*maps.Set) error) error {
	set, err := c.openOrCreate(cp, spare)
	if spare != nil {
		// The spare maps not taken: their memory goes back now, not when
		// the command ends.
		spare.Close()
	}
	if err != nil {
		return err
	}
	defer set.Close()
	if cp.Prealloc && !set.Created && !set.Capacity().Prealloc {
		c.Notice("--prealloc applies when the maps are created: the maps in %s exist, with stats tables that take memory per rule, and are kept as they are (to preallocate them, save, unload everything, then load or restore with --prealloc)", c.Dir)
	}
	if err := change(set); err != nil {
		if set.Created {
			if _, rmErr := c.removeIfUnused(d); rmErr != nil {
				return fmt.Errorf("%w; and %w", withFix(err), rmErr)
			}
		}
		return err
	}
	if set.Created {
		created := fmt.Sprintf("created the maps in %s, holding %d rules per address family", c.Dir, set.RulesV4.MaxEntries())
		if capacity := set.Capacity(); capacity.Prealloc {
			cpus := ebpf.MustPossibleCPU()
			created += fmt.Sprintf(", with preallocated stats tables: %s of kernel memory reserved (%d possible CPUs)", textfmt.Bytes(capacity.StatsMemory(cpus)), cpus)
		}
		c.Notice("%s", created)
	}
	return nil
}

// errInterrupted says that SIGINT or SIGTERM stopped a command, which undid
// what it had done.
var errInterrupted = errors.New("interrupted by a signal")

// interrupted returns errInterrupted, with what was undone, once the
// command's context is cancelled.
func (c *Context) interrupted(undone string) error {
	if c.Ctx.Err() == nil {
		return nil
	}
	return fmt.Errorf("%w: %s", errInterrupted, undone)
}

// LoadCmd attaches the program to an interface.
type LoadCmd struct {
	Dev       string        `name:"dev" required:"" placeholder:"IF" help:"Interface to count on."`
	Direction string        `name:"direction" enum:"ingress,egress,both" default:"ingress" help:"Traffic to count: what IF receives (ingress, with XDP or TC: see --mode), what it sends (egress, with TC) or both."`
	Object    string        `name:"object" type:"existingfile" placeholder:"F" help:"BPF ELF file whose section 'xdp' is loaded instead of the built-in program, for ingress; it must use the maps rules_v4, rules_v6, stats_v4 and stats_v6."`
	Mode      string        `name:"mode" enum:"auto,native,generic,tc" default:"auto" help:"Ingress hook: native XDP (in the driver, before GRO), generic XDP (any interface, after the GRO of lower devices; the kernel skips GRO on IF), tc (TC ingress, after GRO, each aggregate counted as its segments) or auto (native XDP where the driver offers it and IF carries no other XDP program, else tc)."`
	Attach    attach.Method `name:"attach" enum:"auto,link,netlink" default:"auto" help:"How to attach XDP: with a pinned bpf_link (Linux ${linux_xdp_link}), through netlink, or auto (link, else netlink)."`
	TC        attach.TCPath `name:"tc" enum:"auto,tcx,clsact" default:"auto" help:"How to attach TC (egress, and ingress with TC): with a pinned TCX bpf_link (Linux ${linux_tcx}), with a cls_bpf filter on a clsact qdisc, or auto (tcx, else clsact)."`
	Capacity
}

// counters are, for each attach point, the program that counts there.
var counters = map[attach.Point]func(kernel.Features) prog.Hook{
	{Hook: attach.XDP, Direction: attach.Ingress}: prog.XDPHook,
	{Hook: attach.TC, Direction: attach.Ingress}:  prog.TCIngressHook,
	{Hook: attach.TC, Direction: attach.Egress}:   prog.TCHook,
}

// modeTC is the --mode that counts ingress with TC; the others are XDP
// modes (attach.Mode), and auto.
const modeTC = "tc"

// point returns the attach point where load counts direction d, and
// whether it is XDP that auto chooses, to be tried natively before TC.
func (l *LoadCmd) point(d attach.Direction) (at attach.Point, auto bool) {
	if d == attach.Egress || l.Mode == modeTC {
		return attach.Point{Hook: attach.TC, Direction: d}, false
	}
	at = attach.Point{Hook: attach.XDP, Direction: d}
	return at, l.Object == "" && (l.Mode == attach.Auto || l.Mode == "")
}

// directions returns the directions a --direction flag names.
func directions(flag string) []attach.Direction {
	if flag == "both" {
		return []attach.Direction{attach.Ingress, attach.Egress}
	}
	return []attach.Direction{attach.Direction(flag)}
}

// Run loads the program on the interface in each direction asked for,
// creating the maps first if this is the first load. SIGINT or SIGTERM
// before it is done, or a direction that fails, undo it all.
func (l *LoadCmd) Run(c *Context) error {
	var obj *ebpf.CollectionSpec
	if l.Object != "" {
		if l.Direction != string(attach.Ingress) {
			return errors.New("--object gives an XDP program, which counts ingress only: load it with --direction ingress")
		}
		if l.Mode == modeTC {
			return errors.New("--object gives an XDP program, and --mode tc counts with TC: give --mode auto, native or generic")
		}
		var err error
		if obj, err = readObject(l.Object); err != nil {
			return err
		}
	}
	return c.change(true, func(dir *pindir.Dir) error {
		ifc, err := attach.LookupInterface(l.Dev)
		if err != nil {
			return err
		}
		var todo []attach.Direction
		for _, d := range directions(l.Direction) {
			a, err := findOrAdopt(dir, ifc, d)
			if err != nil {
				return err
			}
			if a != nil {
				fmt.Fprintf(c.Stdout, "already loaded on %s (%s): nothing to do\n", a.Ifname, how(a))
				continue
			}
			// Forced XDP refuses an interface that carries another XDP
			// program; auto counts behind it with TC.
			if at, auto := l.point(d); !auto {
				if err := ifc.CheckFree(at); err != nil {
					return err
				}
			}
			todo = append(todo, d)
		}
		if len(todo) == 0 {
			return nil
		}
		return c.withMaps(dir, l.Capacity, nil, func(set *maps.Set) error {
			const undone = "nothing was loaded"
			var done []*attach.Attachment
			undo := func(err error) error {
				err = withFix(err)
				for _, a := range done {
					if dErr := attach.Detach(a); dErr != nil {
						err = fmt.Errorf("%w; and undoing it failed: %w", err, dErr)
					}
				}
				return err
			}
			if obj == nil {
				// The fallbacks of the kernel, once for all directions.
				f, err := kernel.Probe()
				if err != nil {
					return err
				}
				for _, fb := range f.Fallbacks() {
					c.Notice("%s", fb.Notice)
				}
			}
			for _, d := range todo {
				if err := c.interrupted(undone); err != nil {
					return undo(err)
				}
				a, err := l.load(c, ifc, d, set, obj)
				if err != nil {
					return undo(err)
				}
				done = append(done, a)
			}
			if err := c.interrupted(undone); err != nil {
				return undo(err)
			}
			for _, a := range done {
				fmt.Fprintf(c.Stdout, "loaded on %s (%s)\n", a.Ifname, how(a))
			}
			c.warnStacked(ifc)
			return nil
		})
	})
}

// warnStacked warns of every stacking (attach.Stackings) that involves
// ifc, just loaded.
func (c *Context) warnStacked(ifc *attach.Interface) {
	all, err := attach.List(c.Dir)
	if err != nil {
		return
	}
	stacked, err := attach.Stackings(all)
	if err != nil {
		c.Notice("could not check for devices stacked on %s or under it: %v", ifc.Name, err)
		return
	}
	for _, s := range stacked {
		if s.Upper.Is(ifc) || s.Lower.Is(ifc) {
			c.Notice("%s", s)
		}
	}
}

// findOrAdopt returns the attachment of the pinned program to ifc in
// direction d, if any: pinned, or (ingress) our XDP program attached to
// ifc without a pin, which it pins.
func findOrAdopt(dir *pindir.Dir, ifc *attach.Interface, d attach.Direction) (*attach.Attachment, error) {
	if a, err := attach.Find(dir.Path, ifc, d); err != nil || a != nil || d != attach.Ingress || ifc.XDPProg == 0 || maps.Pinned(dir.Path) == 0 {
		return a, err
	}
	if _, err := dir.Adopt(); err != nil {
		return nil, err
	}
	return attach.Find(dir.Path, ifc, d)
}

// load attaches the program that counts direction d to ifc. An automatic
// choice of the ingress hook takes native XDP where the driver offers it
// and ifc carries no other XDP program, else TC ingress, saying which and
// why in one notice.
func (l *LoadCmd) load(c *Context, ifc *attach.Interface, d attach.Direction, set *maps.Set, obj *ebpf.CollectionSpec) (*attach.Attachment, error) {
	o := attach.Options{Mode: attach.Mode(l.Mode), Method: l.Attach, TC: l.TC, Notice: func(s string) { c.Notice("%s", s) }}
	at, auto := l.point(d)
	if !auto {
		return l.attach(c, ifc, at, set, obj, o)
	}
	var foreign *attach.ForeignXDPError
	if err := ifc.CheckFree(at); errors.As(err, &foreign) {
		c.Notice("%s carries XDP program %s: counting ingress with TC behind it; what it drops or redirects is not counted", ifc.Name, foreign.Program)
	} else if err != nil {
		return nil, err
	} else {
		o.Mode = attach.Native
		a, err := l.attach(c, ifc, at, set, obj, o)
		if err == nil {
			return a, nil
		}
		if errors.Is(err, unix.EOPNOTSUPP) {
			c.Notice("%s has no native XDP: counting ingress with TC (after GRO, exact)", ifc.Name)
		} else {
			c.Notice("native XDP failed on %s (%v): counting ingress with TC (after GRO, exact)", ifc.Name, err)
		}
	}
	return l.attach(c, ifc, attach.Point{Hook: attach.TC, Direction: d}, set, obj, o)
}

// attach loads the program that counts at at (the program of obj, when not
// nil) and attaches it to ifc.
func (l *LoadCmd) attach(c *Context, ifc *attach.Interface, at attach.Point, set *maps.Set, obj *ebpf.CollectionSpec, o attach.Options) (*attach.Attachment, error) {
	if obj != nil {
		p, err := loadObject(l.Object, obj, set)
		if err != nil {
			return nil, err
		}
		defer p.Close()
		return attach.Attach(c.Dir, ifc, at, p, o)
	}
	f, err := kernel.Probe()
	if err != nil {
		return nil, err
	}
	return numbered(c, ifc, at, set, counters[at](f), o)
}

// numbered attaches the program of hook h to ifc at at as a new
// attachment of the registry (maps.NextAttachment): its number is baked
// into the program, which counts the per-interface rows under it, and
// recorded before the program is attached (crash steps:
// internal/pindir/doc.go). A failed attach forgets the number again.
func numbered(c *Context, ifc *attach.Interface, at attach.Point, set *maps.Set, h prog.Hook, o attach.Options) (*attach.Attachment, error) {
	n, err := set.NextAttachment()
	if err != nil {
		return nil, err
	}
	h.Attachment = n
	p, err := prog.Load(h, set)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return nil, fmt.Errorf("read the program's ID: %w", err)
	}
	id, _ := info.ID()
	if err := set.RecordAttachment(attach.Record(n, ifc, at, id)); err != nil {
		return nil, err
	}
	a, err := attach.Attach(c.Dir, ifc, at, p, o)
	if err != nil {
		if fErr := set.ForgetAttachment(n); fErr != nil {
			return nil, fmt.Errorf("%w; and %w", err, fErr)
		}
		return nil, err
	}
	return a, nil
}

// how describes an attachment for people.
func how(a *attach.Attachment) string {
	return fmt.Sprintf("%s, program id %d", a.Describe(), a.ProgID)
}

// objectFix is what to do about an unusable --object file.
const objectFix = "give an ELF file with an XDP program in section 'xdp' using the maps rules_v4, rules_v6, stats_v4 and stats_v6"

// readObject reads a BPF ELF file and checks that it has an XDP program in
// section "xdp" and traffic_meter's maps. Only that program is kept.
func readObject(file string) (*ebpf.CollectionSpec, error) {
	spec, err := ebpf.LoadCollectionSpec(file)
	if err != nil {
		return nil, fmt.Errorf("read BPF object: %w: %s", err, objectFix)
	}
	found := false
	for n, p := range spec.Programs {
		if p.SectionName == "xdp" && p.Type == ebpf.XDP && !found {
			found = true
		} else {
			delete(spec.Programs, n)
		}
	}
	if !found {
		return nil, fmt.Errorf("%s has no XDP program in section 'xdp': %s", file, objectFix)
	}
	want := maps.Spec(1)
	for _, n := range maps.RuleNames {
		ms, ok := spec.Maps[n]
		if !ok {
			return nil, fmt.Errorf("%s has no map %s: %s", file, n, objectFix)
		}
		if w := want[n]; ms.Type != w.Type || ms.KeySize != w.KeySize || ms.ValueSize != w.ValueSize {
			return nil, fmt.Errorf("map %s in %s is a %s with %d-byte keys and %d-byte values, not a %s with %d-byte keys and %d-byte values: %s",
				n, file, ms.Type, ms.KeySize, ms.ValueSize, w.Type, w.KeySize, w.ValueSize, objectFix)
		}
	}
	return spec, nil
}

// loadObject loads the program of an object read by readObject over the
// pinned maps.
func loadObject(file string, spec *ebpf.CollectionSpec, set *maps.Set) (*ebpf.Program, error) {
	p, err := set.LoadProgram(spec, programName(spec))
	if err != nil {
		return nil, fmt.Errorf("load %s: %w: %s", file, err, objectFix)
	}
	return p, nil
}

// programName returns the name of the one program readObject keeps.
func programName(spec *ebpf.CollectionSpec) string {
	for n := range spec.Programs {
		return n
	}
	return ""
}

// UnloadCmd detaches the program from an interface, or from all.
type UnloadCmd struct {
	Dev       string `name:"dev" placeholder:"IF" help:"Interface to stop counting on."`
	Direction string `name:"direction" enum:"ingress,egress,both," default:"" help:"With --dev, the direction to stop counting: ingress, egress or both (default: every direction loaded on IF)."`
	All       bool   `name:"all" help:"Detach from every interface loaded from this pin directory, in any network namespace, and remove the maps."`
}

// Run detaches the program from the interface, or from all; after the last
// interface, it removes the maps and the pin directory. Like load, it is
// idempotent: an interface that is not loaded is nothing to do, not an
// error, so that a re-run of an interrupted unload succeeds.
func (u *UnloadCmd) Run(c *Context) error {
	switch {
	case u.Dev == "" && !u.All:
		return errors.New("missing what to unload: give --dev IF, or --all")
	case u.Dev != "" && u.All:
		return errors.New("--dev and --all together: give one of them")
	case u.Direction != "" && u.All:
		return errors.New("--direction and --all together: --all unloads every direction; give --dev IF to pick one")
	}
	if _, err := os.Stat(c.Dir); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(c.Stdout, "nothing loaded in %s: nothing to do\n", c.Dir)
		return nil
	}
	if u.All {
		return u.all(c)
	}
	return c.change(false, func(dir *pindir.Dir) error {
		ifc, err := attach.LookupInterface(u.Dev)
		if err != nil {
			// A loaded interface that is gone: the repair has
			// removed its pin.
			gone := func(a attach.Attachment) bool { return a.Ifname == u.Dev && a.InCallerNetns() }
			if !slices.ContainsFunc(dir.Repaired.Pruned, gone) {
				return err
			}
			for _, a := range dir.Repaired.Pruned {
				if gone(a) {
					fmt.Fprintf(c.Stdout, "unloaded from %s (%s)\n", u.Dev, a.Direction)
				}
			}
		} else {
			want := directions(u.Direction)
			if u.Direction == "" {
				want = directions("both")
			}
			var found []*attach.Attachment
			for _, d := range want {
				a, err := attach.Find(c.Dir, ifc, d)
				if err != nil {
					return err
				}
				if a != nil {
					found = append(found, a)
				}
			}
			if len(found) == 0 {
				all, err := attach.List(c.Dir)
				if err == nil {
					fmt.Fprintf(c.Stdout, "not loaded on %s%s (loaded on: %s): nothing to do\n", u.Dev, forDirection(u.Direction), names(all))
				}
				return err
			}
			for _, a := range found {
				if err := attach.Detach(a); err != nil {
					return err
				}
				fmt.Fprintf(c.Stdout, "unloaded from %s (%s)\n", u.Dev, a.Direction)
			}
		}
		removed, err := c.removeIfUnused(dir)
		if removed {
			fmt.Fprintf(c.Stdout, "that was the last attachment: removed the maps, their rules and counters, and %s\n", c.Dir)
		} else if err == nil {
			err = pruneRegistry(c.Dir)
		}
		return err
	})
}

// all detaches the program from every interface and removes the maps.
func (u *UnloadCmd) all(c *Context) error {
	return c.change(false, func(dir *pindir.Dir) error {
		all, err := attach.List(c.Dir)
		if err != nil {
			return err
		}
		for _, a := range all {
			if err := attach.Detach(&a); err != nil {
				return err
			}
			fmt.Fprintf(c.Stdout, "unloaded from %s (%s)\n", a.Where(), a.Direction)
		}
		if removed, err := c.removeIfUnused(dir); err != nil {
			return err
		} else if !removed {
			return fmt.Errorf("could not remove the maps in %s: an attachment is left: see 'traffic_meter status'", c.Dir)
		}
		fmt.Fprintf(c.Stdout, "removed the maps, their rules and counters, and %s\n", c.Dir)
		return nil
	})
}

// forDirection names a --direction flag for people, if one was given.
func forDirection(flag string) string {
	if flag == "" {
		return ""
	}
	return " for " + flag
}

// names lists the interfaces of attachments for people.
func names(all []attach.Attachment) string {
	if len(all) == 0 {
		return "none"
	}
	var s []string
	for _, a := range all {
		s = append(s, fmt.Sprintf("%s (%s)", a.Ifname, a.Direction))
	}
	return strings.Join(s, ", ")
}

// removeIfUnused removes the maps and the pin directory when no interface
// is loaded any more (pindir.Dir.RemoveIfUnused), and reports whether it
// did. An error says why it could not.
func (c *Context) removeIfUnused(d *pindir.Dir) (removed bool, err error) {
	removed, err = d.RemoveIfUnused()
	if err != nil {
		return false, fmt.Errorf("could not remove the maps in %s: %w: see 'traffic_meter status'", c.Dir, err)
	}
	return removed, nil
}
