package maps

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// FullName is the map of the frames that a breakdown could not count in
// a row of their own because its table was full (see Options): a per-CPU
// array of u64 frame counts, one per table (FullInterfacesV4 ...). Such
// a frame is in its rule's total, hence in the rule's remainder, the
// total less its rows.
const FullName = "breakdown_full"

// Indexes of the breakdown_full array.
const (
	FullInterfacesV4 = iota
	FullInterfacesV6
	FullHostsV4
	FullHostsV6
	fullEntries
)

// fullSpec is the spec of the breakdown_full map.
func fullSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{Name: FullName, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: fullEntries}
}

// FullCounts are the frames of each breakdown table (indexed
// FullInterfacesV4 ...) that went to a remainder because the table was
// full, summed over CPUs.
type FullCounts [fullEntries]uint64

// Full reads the breakdown_full map.
func (s *Set) Full() (FullCounts, error) {
	var fc FullCounts
	perCPU := make([]uint64, ebpf.MustPossibleCPU())
	for i := range fc {
		if err := s.FullMap.Lookup(uint32(i), &perCPU); err != nil {
			return fc, fmt.Errorf("read %s: %w", FullName, err)
		}
		for _, n := range perCPU {
			fc[i] += n
		}
	}
	return fc, nil
}
