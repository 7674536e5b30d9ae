package maps

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// The address caches and the generation (see package prog): in front of
// each family's rule trie, a per-CPU direct-mapped cache of lookup results
// per address, valid only under the generation of the rules it was stored
// with.
//
// A cache is a per-CPU array of buckets of CacheWays entries each,
// CacheSize entries in all (a power of two): an address has its place in
// the bucket at a hash of it, the most recently stored first. An entry is
// {u64 generation; address; u32 result}: the result is the trie value
// (prefix length and options, Options.Value) of the longest rule that
// holds the address, or CacheNoMatch. The
// generation map is a one-entry array holding {u64 generation; u32 mask},
// mask being the number of buckets - 1.
//
// Every change of the rules makes the generation odd before its first
// step (BeginChange) and even, and greater than any before, after its
// last (EndChange). The program reads the generation once per frame,
// before any lookup: while it is odd it neither trusts nor stores an
// entry; else it trusts an entry only if it holds that generation, and
// stores what the trie says under it. So no frame is counted against a
// rule set older than the last completed change, also after a change that
// was killed midway: that leaves the generation odd, and the caches
// unused, until the next change ends.
const (
	CacheV4Name    = "cache_v4"
	CacheV6Name    = "cache_v6"
	GenerationName = "generation"
)

// DefaultCacheSize is the default number of entries of each family's
// address cache, per CPU: 48 bytes an address (both families), 384 KiB
// per CPU, 48 MiB on a 128-CPU server.
const DefaultCacheSize = 8192

// CacheWays is the number of entries of a bucket of a cache.
const CacheWays = 4

// CacheNoMatch is the result of a cache entry of an address that no rule
// holds: no trie value, whose prefix length is at most 128.
const CacheNoMatch = 0xffffffff

// Offsets and sizes of a cache entry, for the program: the generation,
// the address and the result. An IPv4 entry is 16 bytes, an IPv6 one 32.
const (
	CacheGenOff    = 0
	CacheAddrOff   = 8
	CacheResult4   = 12
	CacheResult6   = 24
	CacheEntry4    = 16
	CacheEntry6    = 32
	generationSize = 16
)

// Offsets of the generation map's value, for the program.
const (
	GenerationOff = 0
	CacheMaskOff  = 8
)

// cacheSize is the caches' size of capacity c: CacheSize, or the default.
func (c Capacity) cacheSize() uint32 {
	if c.CacheSize == 0 {
		return DefaultCacheSize
	}
	return c.CacheSize
}

// CheckCacheSize says what is wrong with a cache size given by people.
func CheckCacheSize(n uint32) error {
	if n < CacheWays || bits.OnesCount32(n) != 1 || n > 1<<24 {
		return fmt.Errorf("%d is not a power of two from %d to %d", n, CacheWays, 1<<24)
	}
	return nil
}

// cacheSpecs returns the specs of the caches and of the generation map of
// caches of size entries per CPU. The generation map starts odd: a set is
// created in a change, and its caches are used once the change has ended.
func cacheSpecs(size uint32) map[string]*ebpf.MapSpec {
	buckets := max(size/CacheWays, 1)
	cache := func(name string, entrySize uint32) *ebpf.MapSpec {
		return &ebpf.MapSpec{Name: name, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: CacheWays * entrySize, MaxEntries: buckets}
	}
	return map[string]*ebpf.MapSpec{
		CacheV4Name: cache(CacheV4Name, CacheEntry4),
		CacheV6Name: cache(CacheV6Name, CacheEntry6),
		GenerationName: {Name: GenerationName, Type: ebpf.Array, KeySize: 4, ValueSize: generationSize, MaxEntries: 1,
			Contents: []ebpf.MapKV{{Key: uint32(0), Value: generation{Generation: 1, Mask: buckets - 1}}}},
	}
}

// generation is the value of the generation map.
type generation struct {
	Generation uint64
	Mask       uint32
	_          uint32
}

// Generation returns the set's generation: odd while a change of its
// rules is in progress or after one was killed.
func (s *Set) Generation() (uint64, error) {
	var g generation
	if err := s.Gen.Lookup(uint32(0), &g); err != nil {
		return 0, fmt.Errorf("read the generation: %w", err)
	}
	return g.Generation, nil
}

// BeginChange makes the generation odd, before the first step of a change
// of the rules: the caches are neither trusted nor filled until EndChange.
func (s *Set) BeginChange() error { return bump(s.Gen, func(g uint64) uint64 { return g | 1 }) }

// EndChange makes the generation even and greater than any before, after
// the last step of a change of the rules: every entry stored before is
// stale.
func (s *Set) EndChange() error { return bump(s.Gen, func(g uint64) uint64 { return (g | 1) + 1 }) }

// BeginChange is Set.BeginChange on the set pinned in dir, if there is
// one: what package pindir calls before a change.
func BeginChange(dir string) error { return bumpPinned(dir, (*Set).BeginChange) }

// EndChange is Set.EndChange on the set pinned in dir, if there is one:
// what package pindir calls after a change.
func EndChange(dir string) error { return bumpPinned(dir, (*Set).EndChange) }

func bumpPinned(dir string, fn func(*Set) error) error {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, GenerationName), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open the generation: %w", err)
	}
	defer m.Close()
	if err := checkLayout(m, cacheSpecs(1)[GenerationName]); err != nil {
		// Another version's map: its change is no business of this one.
		return nil
	}
	return fn(&Set{Gen: m})
}

// bump writes next of the generation in m, keeping the mask.
func bump(m *ebpf.Map, next func(uint64) uint64) error {
	var g generation
	if err := m.Lookup(uint32(0), &g); err != nil {
		return fmt.Errorf("read the generation: %w", err)
	}
	g.Generation = next(g.Generation)
	if err := m.Update(uint32(0), g, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("write the generation: %w", err)
	}
	return nil
}

// cacheMemory is the kernel's account of the memory of a family's cache
// of entries of entrySize bytes (array_map_mem_usage in
// kernel/bpf/arraymap.c): the map, a pointer per bucket, and each
// bucket once per possible CPU.
func cacheMemory(entrySize, entries uint32, cpus int) uint64 {
	n := uint64(max(entries/CacheWays, 1))
	return arraySize + n*8 + n*roundUp8(uint64(CacheWays*entrySize))*uint64(cpus)
}

// arraySize is a struct bpf_array, as the kernel counts it once per map
// (measured on Linux 6.18).
const arraySize = 312
