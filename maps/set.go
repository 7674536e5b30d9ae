package maps

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// DefaultPinDir is where the maps are pinned unless --bpffs-pin says otherwise.
const DefaultPinDir = "/sys/fs/bpf/traffic_meter"

// ErrNotLoaded says that the pin directory holds no maps: nothing was loaded
// and no rule was added since the last interface was unloaded.
var ErrNotLoaded = errors.New("no traffic_meter maps are pinned")

// Set is the pinned set of maps shared by every loaded interface.
type Set struct {
	// Dir is the pin directory.
	Dir string
	// RulesV4, RulesV6, StatsV4 and StatsV6 are the maps of the rules.
	RulesV4, RulesV6, StatsV4, StatsV6 *ebpf.Map
	// CacheV4, CacheV6 and Gen are the address caches and the
	// generation (see CacheV4Name).
	CacheV4, CacheV6, Gen *ebpf.Map
	// HostsV4 and HostsV6 hold the rules' host tables (see HostsV4Name).
	HostsV4, HostsV6 *ebpf.Map
	// hostCounts are the host entries the tables reserve (see counts).
	hostsOnce  sync.Once
	hostCounts *hostCounts
	// FullMap counts the frames that found a breakdown table full
	// (FullName).
	FullMap *ebpf.Map
	// IfaceV4, IfaceV6 and Registry are the per-interface rows and the
	// registry of attachments (see IfaceV4Name).
	IfaceV4, IfaceV6, Registry *ebpf.Map
	// Created is true when this call created and pinned the maps.
	Created bool
	// NoOrphans says that every stats entry has its rule: no change was
	// killed between writing the two, which the pin directory's marks
	// tell (package pindir sets it). EachStats then reads the stats maps
	// alone.
	NoOrphans bool
}

// Map returns the map of the given name.
func (s *Set) Map(name string) *ebpf.Map {
	if f := s.field(name); f != nil {
		return *f
	}
	return nil
}

// field returns the field of s that holds the map of the given name, nil
// for a name that is none of Names.
func (s *Set) field(name string) **ebpf.Map {
	switch name {
	case RulesV4Name:
		return &s.RulesV4
	case RulesV6Name:
		return &s.RulesV6
	case StatsV4Name:
		return &s.StatsV4
	case StatsV6Name:
		return &s.StatsV6
	case CacheV4Name:
		return &s.CacheV4
	case CacheV6Name:
		return &s.CacheV6
	case GenerationName:
		return &s.Gen
	case HostsV4Name:
		return &s.HostsV4
	case HostsV6Name:
		return &s.HostsV6
	case FullName:
		return &s.FullMap
	case IfaceV4Name:
		return &s.IfaceV4
	case IfaceV6Name:
		return &s.IfaceV6
	case AttachmentsName:
		return &s.Registry
	}
	return nil
}

// Replacements maps each map name to its map, for loading a program
// against the pinned set.
func (s *Set) Replacements() map[string]*ebpf.Map {
	r := make(map[string]*ebpf.Map, len(Names))
	for _, n := range Names {
		r[n] = s.Map(n)
	}
	return r
}

// Close releases the maps; the pins stay. Closing twice is closing once.
func (s *Set) Close() error {
	for _, n := range Names {
		if m := s.take(n); m != nil {
			m.Close()
		}
	}
	return nil
}

// Open opens the pinned set in dir for reading and writing. It returns an
// error wrapping ErrNotLoaded when dir holds no maps, or only some of them
// (the remains of a change that was killed, which the next change removes),
// and a layout error when a pinned map was made by an incompatible version.
func Open(dir string) (*Set, error) { return open(dir, Capacity{}, nil, nil) }

// OpenReadOnly opens the pinned set in dir as Open does, read-only: for the
// readers, which need only read access to the pins.
func OpenReadOnly(dir string) (*Set, error) {
	return open(dir, Capacity{}, &ebpf.LoadPinOptions{ReadOnly: true}, nil)
}

// OtherVersionError is a pinned map of the set in Dir, at Path, whose
// layout is not this version's: Diff says how it differs.
type OtherVersionError struct {
	Path, Dir string
	Diff      error
}

func (e *OtherVersionError) Error() string {
	return fmt.Sprintf("pinned map %s was made by another traffic_meter version (%v)", e.Path, e.Diff)
}

// OpenOrCreate opens the pinned set in dir, creating and pinning the maps
// that are missing with capacity c (c.MaxRules at least 1). Maps that
// exist keep the capacity they were created with. The caller must hold
// the pin directory's exclusive lock (package pindir).
//
// spare, when not nil, is a set that Create made with the same capacity
// c beforehand, while the caller did something else (creating
// preallocated tables takes the kernel seconds): the missing maps are
// taken from it and pinned rather than created. The caller closes spare
// after, which closes the maps not taken.
func OpenOrCreate(dir string, c Capacity, spare *Set) (*Set, error) { return open(dir, c, nil, spare) }

// Create makes a set of unpinned maps of capacity c: a private set for
// tests and benchmarks, or the spare set of OpenOrCreate.
func Create(c Capacity) (*Set, error) {
	s := &Set{Created: true}
	for n, spec := range c.Spec() {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("create map %s: %w", n, err)
		}
		s.setMap(n, m)
	}
	return s, nil
}

// open opens the set in dir, creating missing maps with capacity c (or
// taking them from spare) when c.MaxRules > 0.
func open(dir string, c Capacity, opts *ebpf.LoadPinOptions, spare *Set) (*Set, error) {
	s := &Set{Dir: dir}
	want := Capacity{MaxRules: max(c.MaxRules, 1), Prealloc: c.Prealloc, CacheSize: c.CacheSize, InterfaceRows: c.InterfaceRows, HostCapacity: c.HostCapacity}.Spec()
	missing := 0
	for _, n := range Names {
		path := filepath.Join(dir, n)
		m, err := ebpf.LoadPinnedMap(path, opts)
		if errors.Is(err, os.ErrNotExist) {
			missing++
			continue
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open pinned map %s: %w", path, err)
		}
		s.setMap(n, m)
		if err := checkLayout(m, want[n]); err != nil {
			s.Close()
			return nil, &OtherVersionError{Path: path, Dir: dir, Diff: err}
		}
	}
	if s.Map(layoutMark) == nil && missing < len(Names) {
		s.Close()
		path := filepath.Join(dir, layoutMark)
		return nil, &OtherVersionError{Path: path, Dir: dir, Diff: errOldLayout}
	}
	switch {
	case missing == 0:
		return s, nil
	case c.MaxRules == 0:
		s.Close()
		return nil, fmt.Errorf("%w in %s", ErrNotLoaded, dir)
	}
	s.Created = missing == len(Names)
	for _, n := range Names {
		if s.Map(n) != nil {
			continue
		}
		m, err := spare.take(n), error(nil)
		if m == nil {
			m, err = ebpf.NewMap(want[n])
		}
		if err == nil {
			s.setMap(n, m)
			err = m.Pin(filepath.Join(dir, n))
		}
		if err != nil {
			s.Close()
			if s.Created {
				Unpin(dir)
			}
			return nil, fmt.Errorf("create map %s in %s: %w", n, dir, err)
		}
	}
	return s, nil
}

// layoutMark is the map of this layout that older layouts lack: the
// first of Names, made first and removed last, so that a set holding
// maps of Names without it is of an older layout.
const layoutMark = FullName

// errOldLayout is the difference of a set of an older layout: layout 1
// (before the address caches) or 2 (before the rule options).
var errOldLayout = errors.New("no " + layoutMark + " map: layout 1 or 2, before the rule options")

// CheckLayout returns an OtherVersionError when dir holds the maps of a
// set of an older layout (see layoutMark), nil otherwise: what a repair
// checks before it judges a set by the maps pinned.
func CheckLayout(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, layoutMark)); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, n := range Names[1:] {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return &OtherVersionError{Path: filepath.Join(dir, layoutMark), Dir: dir, Diff: errOldLayout}
		}
	}
	return nil
}

// Capacity returns the capacity the set was created with, read from its
// maps: the IPv4 rule trie's capacity, whether the IPv4 stats table
// is preallocated and the IPv4 cache's size (the maps of a set are all
// created alike).
func (s *Set) Capacity() Capacity {
	return Capacity{MaxRules: s.RulesV4.MaxEntries(), Prealloc: s.StatsV4.Flags()&unix.BPF_F_NO_PREALLOC == 0,
		CacheSize: s.CacheV4.MaxEntries() * CacheWays, InterfaceRows: s.IfaceV4.MaxEntries(), HostCapacity: s.HostsV4.MaxEntries()}
}

// take returns the map of the given name and leaves the set without it;
// nil when s is nil.
func (s *Set) take(name string) *ebpf.Map {
	if s == nil {
		return nil
	}
	m := s.Map(name)
	s.setMap(name, nil)
	return m
}

// setMap puts m in the field of s for the map of the given name.
func (s *Set) setMap(name string, m *ebpf.Map) {
	if f := s.field(name); f != nil {
		*f = m
	}
}

// Pinned reports how many of the maps (Names) are pinned in dir: none or all but
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

// Unpin removes the pins of the maps, in the reverse order of Names,
// leaving the pin directory. The caller
// must hold the pin directory's exclusive lock (package pindir).
func Unpin(dir string) error {
	for _, n := range slices.Backward(Names) {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unpin %s: %w", n, err)
		}
	}
	return nil
}

// IDs returns the kernel's IDs of the maps, by which a program that
// counts into this set is known.
func (s *Set) IDs() ([]ebpf.MapID, error) {
	var ids []ebpf.MapID
	for _, n := range Names {
		info, err := s.Map(n).Info()
		if err != nil {
			return nil, fmt.Errorf("read map %s: %w", n, err)
		}
		id, _ := info.ID()
		ids = append(ids, id)
	}
	return ids, nil
}
