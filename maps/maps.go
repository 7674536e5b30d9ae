// Package maps defines traffic_meter's BPF maps — the rule tries, the
// per-CPU stats tables and the per-CPU address caches of each address
// family, and the generation of the rules — their key and value types, and
// the pinned set that every loaded interface shares.
//
// The layouts are the contract between the XDP program (package prog) and
// user space: a rule key is {u32 prefixlen; u8 addr[N]} in both the LPM trie
// and the stats hash, a trie value is the rule's u32 prefix length and
// its options (Options.Value), and a stats value is {in, out} x {packets, bytes} as u64, one copy per CPU.
package maps

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Map names, as pinned in the pin directory and as seen by bpftool.
const (
	RulesV4Name = "rules_v4"
	RulesV6Name = "rules_v6"
	StatsV4Name = "stats_v4"
	StatsV6Name = "stats_v6"
)

// DefaultMaxRules is the default capacity of each family's rule trie and
// stats table. By default the maps are not preallocated, so capacity costs
// little kernel memory until rules are added.
const DefaultMaxRules = 1_000_000

// Capacity is what the maps are created with.
type Capacity struct {
	// MaxRules is how many rules each family's maps hold.
	MaxRules uint32
	// Prealloc creates the stats tables preallocated: the kernel reserves
	// the memory of every entry of their capacity when it creates them
	// (see Capacity.Memory), and a new rule's stats entry then costs a
	// fraction of what it costs in a table that allocates it when the
	// rule is added (the default). The tries are never preallocated: the
	// kernel refuses LPM tries that are.
	Prealloc bool
	// CacheSize is how many addresses each family's address cache holds
	// per CPU, a power of two (CheckCacheSize); 0 is DefaultCacheSize.
	CacheSize uint32
	// InterfaceRows is how many per-interface rows each family's table
	// holds (IfaceV4Name); 0 is DefaultInterfaceRows.
	InterfaceRows uint32
	// HostCapacity is how many host entries the host tables of each
	// family's rules may hold together (see HostsV4Name); 0 is
	// DefaultHostCapacity.
	HostCapacity uint32
}

// Spec returns the specs of the maps of a set created with this capacity.
func (c Capacity) Spec() map[string]*ebpf.MapSpec {
	specs := Spec(c.MaxRules)
	if c.Prealloc {
		for _, n := range []string{StatsV4Name, StatsV6Name} {
			specs[n].Flags &^= unix.BPF_F_NO_PREALLOC
		}
	}
	for n, spec := range cacheSpecs(c.cacheSize()) {
		specs[n] = spec
	}
	for n, spec := range hostsSpecs(c.hostCapacity()) {
		specs[n] = spec
	}
	specs[FullName] = fullSpec()
	for n, spec := range interfaceSpecs(c.interfaceRows()) {
		specs[n] = spec
	}
	return specs
}

// Key4 is an IPv4 rule key: the rules_v4 trie key and the stats_v4 hash key.
type Key4 struct {
	Prefixlen uint32
	Addr      [4]byte
}

// Key6 is an IPv6 rule key: the rules_v6 trie key and the stats_v6 hash key.
type Key6 struct {
	Prefixlen uint32
	Addr      [16]byte
}

// Counter is a packet and byte count.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// Add returns the sum of two counters.
func (c Counter) Add(o Counter) Counter {
	return Counter{Packets: c.Packets + o.Packets, Bytes: c.Bytes + o.Bytes}
}

// Stats is one CPU's stats value of a rule: In counts packets whose
// destination matched the rule, Out packets whose source matched it.
type Stats struct {
	In  Counter
	Out Counter
}

// Offsets of the counters inside a Stats value, for the XDP program.
const (
	InPacketsOff  = 0
	InBytesOff    = 8
	OutPacketsOff = 16
	OutBytesOff   = 24
)

// put writes s into b (statsSize bytes) in the layout of a stats value.
func (s Stats) put(b []byte) {
	binary.NativeEndian.PutUint64(b[InPacketsOff:], s.In.Packets)
	binary.NativeEndian.PutUint64(b[InBytesOff:], s.In.Bytes)
	binary.NativeEndian.PutUint64(b[OutPacketsOff:], s.Out.Packets)
	binary.NativeEndian.PutUint64(b[OutBytesOff:], s.Out.Bytes)
}

// Total is the rule's traffic in both directions.
func (s Stats) Total() Counter { return s.In.Add(s.Out) }

// Add returns the sum of two stats values.
func (s Stats) Add(o Stats) Stats {
	return Stats{In: s.In.Add(o.In), Out: s.Out.Add(o.Out)}
}

// SumCPUs adds up the per-CPU values of one stats entry.
func SumCPUs(perCPU []Stats) Stats {
	var sum Stats
	for _, s := range perCPU {
		sum = sum.Add(s)
	}
	return sum
}

// Sizes of the keys and values in bytes.
const (
	key4Size  = 8
	key6Size  = 20
	ruleSize  = 4
	statsSize = 32
)

// Spec returns the specs of the four maps of the rules (RuleNames), each holding up to maxRules
// entries. The tries must not be preallocated (the kernel insists), and
// the stats tables are not either, unless created with Capacity.Prealloc:
// so an empty set costs almost nothing.
func Spec(maxRules uint32) map[string]*ebpf.MapSpec {
	rules := func(name string, keySize uint32) *ebpf.MapSpec {
		return &ebpf.MapSpec{Name: name, Type: ebpf.LPMTrie, KeySize: keySize,
			ValueSize: ruleSize, MaxEntries: maxRules, Flags: unix.BPF_F_NO_PREALLOC}
	}
	return map[string]*ebpf.MapSpec{
		RulesV4Name: rules(RulesV4Name, key4Size),
		RulesV6Name: rules(RulesV6Name, key6Size),
		StatsV4Name: statsSpec(StatsV4Name, key4Size, maxRules),
		StatsV6Name: statsSpec(StatsV6Name, key6Size, maxRules),
	}
}

// statsSpec is the spec of a table of stats values: a per-CPU hash of
// entries entries, keys of keySize bytes, not preallocated (a rule's
// stats, a per-interface row, a host's row).
func statsSpec(name string, keySize, entries uint32) *ebpf.MapSpec {
	return &ebpf.MapSpec{Name: name, Type: ebpf.PerCPUHash, KeySize: keySize,
		ValueSize: statsSize, MaxEntries: entries, Flags: unix.BPF_F_NO_PREALLOC}
}

// RuleNames lists the names of the maps of the rules in a fixed order: IPv4
// before IPv6, rules before stats. A program of an ELF object counts with
// these (the maps it must have).
var RuleNames = []string{RulesV4Name, StatsV4Name, RulesV6Name, StatsV6Name}

// Names lists the names of every map of a set, in the order they are
// created and pinned: the layout's mark first (layoutMark), so that a
// set missing it but not the others is a set of an older layout (see
// open). They are unpinned in the reverse order.
var Names = append([]string{FullName, AttachmentsName, IfaceV4Name, IfaceV6Name, HostsV4Name, HostsV6Name, GenerationName, CacheV4Name, CacheV6Name}, RuleNames...)

// checkLayout reports how a map differs from its spec in type, key size,
// value size or flags. The capacity may differ, and so may the stats
// tables' preallocation: both are chosen when the maps are first created.
func checkLayout(m *ebpf.Map, spec *ebpf.MapSpec) error {
	var either uint32
	if spec.Type == ebpf.Array && m.MaxEntries() != spec.MaxEntries {
		return fmt.Errorf("%d entries, want %d", m.MaxEntries(), spec.MaxEntries)
	}
	if spec.Type == ebpf.PerCPUHash {
		either = unix.BPF_F_NO_PREALLOC
	}
	switch {
	case m.Type() != spec.Type:
		return fmt.Errorf("type %s, want %s", m.Type(), spec.Type)
	case m.KeySize() != spec.KeySize:
		return fmt.Errorf("key size %d, want %d", m.KeySize(), spec.KeySize)
	case m.ValueSize() != spec.ValueSize:
		return fmt.Errorf("value size %d, want %d", m.ValueSize(), spec.ValueSize)
	case m.Flags()&^either != spec.Flags&^either:
		return fmt.Errorf("flags %#x, want %#x", m.Flags(), spec.Flags)
	}
	return nil
}

// Rule is one rule: an IPv4 or IPv6 network in canonical form (host bits
// zero). A single address is a /32 or /128 rule.
type Rule = netip.Prefix

// Key4Of returns the key of an IPv4 rule.
func Key4Of(r Rule) Key4 {
	return Key4{Prefixlen: uint32(r.Bits()), Addr: r.Addr().As4()}
}

// Key6Of returns the key of an IPv6 rule.
func Key6Of(r Rule) Key6 {
	return Key6{Prefixlen: uint32(r.Bits()), Addr: r.Addr().As16()}
}

// Rule returns the rule a key stands for.
func (k Key4) Rule() Rule { return netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen)) }

// Rule returns the rule a key stands for.
func (k Key6) Rule() Rule { return netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen)) }
