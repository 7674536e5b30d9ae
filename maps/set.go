package maps

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// DefaultPinDir is where the maps are pinned unless --bpffs-pin says otherwise.
const DefaultPinDir = "/sys/fs/bpf/traffic_meter"

// bpffsRoot is the usual mount point of the BPF filesystem.
const bpffsRoot = "/sys/fs/bpf"

// ErrNotLoaded says that the pin directory holds no maps: nothing was loaded
// and no rule was added since the last interface was unloaded.
var ErrNotLoaded = errors.New("no traffic_meter maps are pinned")

// Set is the pinned set of maps shared by every loaded interface.
type Set struct {
	// Dir is the pin directory.
	Dir string
	// RulesV4, RulesV6, StatsV4 and StatsV6 are the four maps.
	RulesV4, RulesV6, StatsV4, StatsV6 *ebpf.Map
	// Created is true when this call created and pinned the maps.
	Created bool
}

// Map returns the map of the given name.
func (s *Set) Map(name string) *ebpf.Map {
	switch name {
	case RulesV4Name:
		return s.RulesV4
	case RulesV6Name:
		return s.RulesV6
	case StatsV4Name:
		return s.StatsV4
	case StatsV6Name:
		return s.StatsV6
	}
	return nil
}

// Replacements maps each map name to its map, for loading a program or an
// ELF collection against the pinned set.
func (s *Set) Replacements() map[string]*ebpf.Map {
	r := make(map[string]*ebpf.Map, len(Names))
	for _, n := range Names {
		r[n] = s.Map(n)
	}
	return r
}

// Close releases the maps; the pins stay.
func (s *Set) Close() error {
	for _, n := range Names {
		if m := s.Map(n); m != nil {
			m.Close()
		}
	}
	return nil
}

// Open opens the pinned set in dir. It returns an error wrapping
// ErrNotLoaded when dir holds no maps, and a layout error when a pinned
// map was made by an incompatible version.
func Open(dir string) (*Set, error) { return open(dir, 0) }

// OpenOrCreate opens the pinned set in dir, creating and pinning the maps
// that are missing, each holding up to maxRules entries. The caller must
// hold the directory's Lock.
func OpenOrCreate(dir string, maxRules uint32) (*Set, error) { return open(dir, maxRules) }

// Create makes a set of unpinned maps, each holding up to maxRules
// entries: a private set for tests and benchmarks of the program.
func Create(maxRules uint32) (*Set, error) {
	s := &Set{Created: true}
	for n, spec := range Spec(maxRules) {
		m, err := ebpf.NewMap(spec)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("create map %s: %w", n, err)
		}
		s.setMap(n, m)
	}
	return s, nil
}

// open opens the set in dir, creating missing maps when maxRules > 0.
func open(dir string, maxRules uint32) (*Set, error) {
	s := &Set{Dir: dir}
	want := Spec(max(maxRules, 1))
	missing := 0
	for _, n := range Names {
		path := filepath.Join(dir, n)
		m, err := ebpf.LoadPinnedMap(path, nil)
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
			return nil, fmt.Errorf("pinned map %s was made by another traffic_meter version (%v): unload every interface with that version, or remove %s, then load again", path, err, dir)
		}
	}
	switch {
	case missing == 0:
		return s, nil
	case maxRules == 0 && missing == len(Names):
		return nil, fmt.Errorf("%w in %s", ErrNotLoaded, dir)
	case maxRules == 0:
		s.Close()
		return nil, fmt.Errorf("%s holds an incomplete set of maps: run 'traffic_meter load' again to complete it", dir)
	}
	s.Created = missing == len(Names)
	for _, n := range Names {
		if s.Map(n) != nil {
			continue
		}
		m, err := ebpf.NewMap(want[n])
		if err == nil {
			s.setMap(n, m)
			err = m.Pin(filepath.Join(dir, n))
		}
		if err != nil {
			s.Close()
			if s.Created {
				removePins(dir)
			}
			return nil, fmt.Errorf("create map %s in %s: %w", n, dir, err)
		}
	}
	return s, nil
}

func (s *Set) setMap(name string, m *ebpf.Map) {
	switch name {
	case RulesV4Name:
		s.RulesV4 = m
	case RulesV6Name:
		s.RulesV6 = m
	case StatsV4Name:
		s.StatsV4 = m
	case StatsV6Name:
		s.StatsV6 = m
	}
}

// Remove unpins the maps and removes the pin directory if nothing else is
// left in it. The caller must hold the directory's Lock.
func Remove(dir string) error {
	if err := removePins(dir); err != nil {
		return err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("remove pin directory: %w", err)
	}
	return nil
}

func removePins(dir string) error {
	for _, n := range Names {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unpin %s: %w", n, err)
		}
	}
	return nil
}

// Lock is an exclusive lock on a pin directory, serialising the commands
// that change it (creating, filling and removing the maps and attachments).
type Lock struct{ f *os.File }

// LockDir takes the lock on dir, waiting for other holders. With create, a
// missing dir is made (root-only) first, and the BPF filesystem is mounted
// at /sys/fs/bpf if dir lies under it and nothing is mounted there yet;
// mounted reports that. Without create, a missing dir gives ErrNotLoaded.
func LockDir(dir string, create bool) (l *Lock, mounted bool, err error) {
	if create {
		if mounted, err = ensureBPFFS(dir); err != nil {
			return nil, false, err
		}
	}
	for {
		if create {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, mounted, fmt.Errorf("create pin directory %s: %w", dir, err)
			}
		}
		f, err := os.Open(dir)
		if errors.Is(err, os.ErrNotExist) && !create {
			return nil, mounted, fmt.Errorf("%w in %s", ErrNotLoaded, dir)
		}
		if err != nil {
			return nil, mounted, fmt.Errorf("open pin directory: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, mounted, fmt.Errorf("lock pin directory %s: %w", dir, err)
		}
		// The holder before us may have removed the directory: start again.
		held, err1 := f.Stat()
		now, err2 := os.Stat(dir)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			if create {
				if err := os.Chmod(dir, 0o700); err != nil {
					f.Close()
					return nil, mounted, fmt.Errorf("make pin directory root-only: %w", err)
				}
			}
			return &Lock{f: f}, mounted, nil
		}
		f.Close()
	}
}

// Unlock releases the lock.
func (l *Lock) Unlock() { l.f.Close() }

// ensureBPFFS checks that dir is (or will be) on a BPF filesystem, mounting
// one at /sys/fs/bpf when dir lies under it and nothing is mounted there.
func ensureBPFFS(dir string) (mounted bool, err error) {
	dir = filepath.Clean(dir)
	if !strings.HasPrefix(dir+"/", bpffsRoot+"/") {
		if !OnBPFFS(dir) {
			return false, fmt.Errorf("%s is not on a BPF filesystem: pick a --bpffs-pin directory under a bpffs mount (mount -t bpf bpf DIR)", dir)
		}
		return false, nil
	}
	if isBPFFS(bpffsRoot) {
		return false, nil
	}
	if err := os.MkdirAll(bpffsRoot, 0o755); err != nil {
		return false, fmt.Errorf("no BPF filesystem at %s and cannot create its mount point: %w", bpffsRoot, err)
	}
	if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, ""); err != nil {
		return false, fmt.Errorf("no BPF filesystem at %s and mounting one failed (%v): mount it with 'mount -t bpf bpf %s'", bpffsRoot, err, bpffsRoot)
	}
	return true, nil
}

// OnBPFFS reports whether dir, or the nearest directory above it that
// exists, is on a BPF filesystem.
func OnBPFFS(dir string) bool {
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil {
			return st.Type == unix.BPF_FS_MAGIC
		}
		if filepath.Dir(dir) == dir {
			return false
		}
		dir = filepath.Dir(dir)
	}
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// LoadProgram loads the named program of a collection over this set: the
// collection's maps named as the set's are the set's maps, whatever
// capacity and flags the collection gives them.
func (s *Set) LoadProgram(spec *ebpf.CollectionSpec, name string) (*ebpf.Program, error) {
	for n, m := range s.Replacements() {
		if ms, ok := spec.Maps[n]; ok {
			ms.MaxEntries, ms.Flags = m.MaxEntries(), m.Flags()
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: s.Replacements()})
	if err != nil {
		return nil, err
	}
	defer coll.Close()
	return coll.DetachProgram(name), nil
}
