package maps

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
)

// TestReadEach reads the rule trie and the stats table with the fallback
// for kernels without batch lookups, and with batches where the kernel has
// them, and checks both read the same. Without batch lookups both are the
// fallback, as the log says.
func TestReadEach(t *testing.T) {
	testnet.RequireRoot(t)
	f, err := kernel.Probe()
	if err != nil {
		t.Fatal(err)
	}
	if !f.LPMBatch || !f.HashBatch {
		t.Logf("kernel %s: batch lookups on LPM tries %v, on hash maps %v: missing ones fall back to key by key on both sides", f.Release, f.LPMBatch, f.HashBatch)
	}
	set, err := Create(Capacity{MaxRules: DefaultMaxRules})
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	for i := range 300 {
		if _, _, err := set.Add(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24), Options{}); err != nil {
			t.Fatal(err)
		}
	}
	fam := set.v4()
	cpus := ebpf.MustPossibleCPU()
	read := func(batches bool) (rules, stats []string) {
		r := func(k Key4, v []uint32) { rules = append(rules, fmt.Sprint(k.Rule(), v)) }
		s := func(k Key4, v []Stats) { stats = append(stats, fmt.Sprint(k.Rule(), len(v), SumCPUs(v))) }
		var err1, err2 error
		if batches {
			err1, err2 = readBatches(fam.rules, 1, r), readBatches(fam.stats, cpus, s)
		} else {
			err1, err2 = readEach(fam.rules, 1, r), readEach(fam.stats, cpus, s)
		}
		if err1 != nil || err2 != nil {
			t.Fatalf("read with batches %v: %v, %v", batches, err1, err2)
		}
		// Both walk the maps in the kernel's order; sort all the same.
		slices.Sort(rules)
		slices.Sort(stats)
		return rules, stats
	}
	rules, stats := read(false)
	if len(rules) != 300 || len(stats) != 300 {
		t.Fatalf("read %d rules and %d stats key by key, want 300 each", len(rules), len(stats))
	}
	batchRules, batchStats := read(true)
	if fmt.Sprint(rules) != fmt.Sprint(batchRules) || fmt.Sprint(stats) != fmt.Sprint(batchStats) {
		t.Errorf("key by key and in batches read differently:\n%v\n%v\n%v\n%v", rules, batchRules, stats, batchStats)
	}
}
