package maps

import "math/bits"

// Memory returns the bytes of kernel memory that a set of capacity c
// reserves when it is created, on a machine with cpus possible CPUs
// (ebpf.PossibleCPU): its stats tables' (StatsMemory), its address
// caches' (CacheMemory) and its outer maps of host tables' (HostsMemory).
func (c Capacity) Memory(cpus int) uint64 {
	return c.StatsMemory(cpus) + c.CacheMemory(cpus) + c.HostsMemory()
}

// StatsMemory returns the bytes of kernel memory that the two stats tables
// of a set of capacity c reserve when they are created, on cpus possible
// CPUs: every entry of their capacity when they are preallocated, only
// their hash buckets when they are not (their entries then take memory as
// rules are added).
func (c Capacity) StatsMemory(cpus int) uint64 {
	return statsMemory(key4Size, c.MaxRules, c.Prealloc, cpus) + statsMemory(key6Size, c.MaxRules, c.Prealloc, cpus)
}

// CacheMemory returns the bytes of kernel memory that the two address
// caches of a set of capacity c take, on cpus possible CPUs.
func (c Capacity) CacheMemory(cpus int) uint64 {
	return cacheMemory(CacheEntry4, c.cacheSize(), cpus) + cacheMemory(CacheEntry6, c.cacheSize(), cpus)
}

// The kernel's sizes that a per-CPU hash's memory is made of, on 64-bit
// machines (kernel/bpf/hashtab.c).
const (
	// htabSize is the map's own struct bpf_htab, with what else the
	// kernel counts once per map: 960 bytes on Linux 6.18 (measured).
	htabSize = 960
	// bucketSize is a struct bucket: a list head and its lock.
	bucketSize = 16
	// elemSize is a struct htab_elem without its key: list node, free
	// list node, hash and the pointer to the per-CPU value.
	elemSize = 48 + 8
)

// statsMemory is the kernel's own account of a per-CPU hash's memory (the
// "memlock" of /proc/PID/fdinfo of the map, which htab_map_mem_usage in
// kernel/bpf/hashtab.c computes since Linux 6.4) as it is created with
// keySize-byte keys, statsSize-byte values and maxEntries entries, on cpus
// possible CPUs:
//
//   - the map: htabSize;
//   - its buckets: bucketSize x maxEntries rounded up to a power of two;
//   - preallocated, every entry of the capacity: an element (elemSize plus
//     the key rounded up to 8 bytes) and the value rounded up to 8 bytes
//     once per possible CPU.
//
// It matches the memlock that Linux 6.18 reports to the byte
// (TestMemoryKernel); other kernels since 6.4 count the same terms,
// with a struct bpf_htab of their own size (a few hundred bytes apart).
func statsMemory(keySize, maxEntries uint32, prealloc bool, cpus int) uint64 {
	n := uint64(maxEntries)
	total := uint64(htabSize) + bucketSize*pow2(n)
	if prealloc {
		total += n * (elemSize + roundUp8(uint64(keySize)) + roundUp8(statsSize)*uint64(cpus))
	}
	return total
}

// pow2 returns n rounded up to a power of two (at least 1).
func pow2(n uint64) uint64 {
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len64(n-1)
}

func roundUp8(n uint64) uint64 { return (n + 7) &^ 7 }
