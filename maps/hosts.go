package maps

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The per-host breakdown of a rule (Options.Hosts, SPEC "Breakdowns of a
// rule"). Each family has a hash of maps, hosts_v4 or hosts_v6, keyed by
// the rule key (Key4, Key6), whose value is the rule's own host table:
// an inner map that user space makes for every rule with the option, a
// per-CPU hash keyed by the host address (4 or 16 bytes) with a Stats
// value, holding at most the rule's host capacity N, never preallocated
// (a preallocated hash reuses a deleted entry at once, so a frame in
// flight could land in another host).
//
// The program (package prog, countHost) counts a frame into the host's
// entry after it counted it into the rule's stats entry, on the same CPU,
// and makes the entry on a host's first frame (BPF_NOEXIST); a full table
// refuses it (E2BIG) and the program counts the frame in breakdown_full.
// No host is ever evicted. The rows are read before the rule's total
// (RuleHosts), and the "other hosts" remainder is derived, total minus
// the rows: rows plus remainder equal the total by construction, and a
// row that goes (HostsClear, a new capacity, del, a full table, a frame
// in flight into a table swapped out) moves into the remainder.
//
// An inner map is made unpinned and put into the pinned outer map in one
// update, which also swaps out the rule's old one (the kernel frees it
// once no program holds it): a change killed before the update leaves
// nothing, one killed after a rule's removal from the trie leaves an
// outer entry without its rule, which the repair removes
// (RemoveHostOrphans).
const (
	HostsV4Name = "hosts_v4"
	HostsV6Name = "hosts_v6"
)

// DefaultHostCapacity is the default host capacity of each family: the
// most host entries that the rules' host tables may hold together.
const DefaultHostCapacity = 1 << 20

// ErrHostCapacity says that a rule's host capacity would take the
// family's host capacity past its bound.
var ErrHostCapacity = errors.New("not enough host capacity")

// HostCapacityError is ErrHostCapacity with its figures: a rule asked for
// Want host entries while the family's rules hold Used of Capacity.
type HostCapacityError struct {
	Rule                 Rule
	Want, Used, Capacity uint64
}

func (e *HostCapacityError) Error() string {
	return fmt.Sprintf("%v: %s asks for %d hosts, the rules of its family hold %d of %d",
		ErrHostCapacity, e.Rule, e.Want, e.Used, e.Capacity)
}

// Unwrap makes errors.Is(err, ErrHostCapacity) true.
func (e *HostCapacityError) Unwrap() error { return ErrHostCapacity }

// hostCapacity is the host capacity of capacity c: HostCapacity, or the
// default.
func (c Capacity) hostCapacity() uint32 {
	if c.HostCapacity == 0 {
		return DefaultHostCapacity
	}
	return c.HostCapacity
}

// hostsSpecs returns the specs of the outer maps of a set whose families
// hold up to capacity host entries each. An outer map's capacity is the
// host capacity: it records it (Set.Capacity), and since every rule with
// the option holds at least one host, it holds every such rule.
func hostsSpecs(capacity uint32) map[string]*ebpf.MapSpec {
	outer := func(name string, keySize, addrSize uint32) *ebpf.MapSpec {
		return &ebpf.MapSpec{Name: name, Type: ebpf.HashOfMaps, KeySize: keySize, ValueSize: 4,
			MaxEntries: capacity, Flags: unix.BPF_F_NO_PREALLOC, InnerMap: hostTableSpec(addrSize, 1)}
	}
	return map[string]*ebpf.MapSpec{
		HostsV4Name: outer(HostsV4Name, key4Size, 4),
		HostsV6Name: outer(HostsV6Name, key6Size, 16),
	}
}

// hostTableSpec is the spec of a rule's host table: n hosts of addrSize-byte
// addresses. Inner maps of one outer map may differ in capacity from its
// template since Linux 5.10 (bpf_map_meta_equal compares type, key and
// value sizes and flags only).
func hostTableSpec(addrSize, n uint32) *ebpf.MapSpec {
	return statsSpec("hosts", addrSize, n)
}

// hostTables is a family's outer map of host tables, with the count of
// the host entries its tables reserve.
type hostTables[K key] struct {
	outer    *ebpf.Map
	reserved *hostCount
}

// hostCount is the sum of the capacities of a family's host tables,
// read once per Set and kept as the Set changes them: import changes
// rules from a worker per CPU, and each must find the bound as the others
// left it.
type hostCount struct {
	mu    sync.Mutex
	known bool
	n     uint64
	// restoring are the saved host rows of the rules being restored.
	restoring map[Rule][]HostStats
}

// hostCounts are a Set's two families' hostCount.
type hostCounts struct{ v4, v6 hostCount }

func (s *Set) hosts4() hostTables[Key4] { return hostTables[Key4]{s.HostsV4, &s.counts().v4} }
func (s *Set) hosts6() hostTables[Key6] { return hostTables[Key6]{s.HostsV6, &s.counts().v6} }

// counts returns the Set's hostCounts, made on first use.
func (s *Set) counts() *hostCounts {
	s.hostsOnce.Do(func() { s.hostCounts = new(hostCounts) })
	return s.hostCounts
}

// table returns the host table of rule k, nil when it has none.
func (h hostTables[K]) table(k K) (*ebpf.Map, error) {
	var inner *ebpf.Map
	err := h.outer.Lookup(k, &inner)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up the hosts of %s: %w", k.Rule(), err)
	}
	return inner, nil
}

// capacityOf returns the capacity of rule k's host table, 0 when it has
// none.
func (h hostTables[K]) capacityOf(k K) (uint64, error) {
	inner, err := h.table(k)
	if inner == nil {
		return 0, err
	}
	defer inner.Close()
	return uint64(inner.MaxEntries()), nil
}

// lock locks the family's count of reserved host entries, reading it
// from the tables the first time; the caller unlocks it.
func (h hostTables[K]) lock() error {
	h.reserved.mu.Lock()
	if h.reserved.known {
		return nil
	}
	u, err := h.usage(false)
	if err != nil {
		h.reserved.mu.Unlock()
		return err
	}
	h.reserved.n, h.reserved.known = u.Reserved, true
	return nil
}

// swap gives rule k a new, empty host table of n hosts in one update of
// the outer map, which drops the table it had (its rows move into the
// rule's remainder). It first checks the bound: the family's tables, the
// rule's old one left out, plus n within the outer map's capacity.
func (h hostTables[K]) swap(k K, n uint32) error {
	return h.withTable(k, func(had uint64) error { return h.swapLocked(k, n, had) })
}

// withTable runs change with the family's count of reserved host entries
// locked and had the capacity of rule k's table (0 for none).
func (h hostTables[K]) withTable(k K, change func(had uint64) error) error {
	if err := h.lock(); err != nil {
		return err
	}
	defer h.reserved.mu.Unlock()
	had, err := h.capacityOf(k)
	if err != nil {
		return err
	}
	return change(had)
}

// swapLocked is swap under withTable.
func (h hostTables[K]) swapLocked(k K, n uint32, had uint64) error {
	used := h.reserved.n - had
	if capacity := uint64(h.outer.MaxEntries()); used+uint64(n) > capacity {
		return &HostCapacityError{Rule: k.Rule(), Want: uint64(n), Used: used, Capacity: capacity}
	}
	inner, err := ebpf.NewMap(hostTableSpec(h.outer.KeySize()-4, n))
	if err != nil {
		return fmt.Errorf("create the host table of %s: %w", k.Rule(), err)
	}
	defer inner.Close()
	if err := fillHosts(inner, h.reserved.restoring[k.Rule()]); err != nil {
		return fmt.Errorf("restore the hosts of %s: %w", k.Rule(), err)
	}
	err = retryNoMem(func() (int, error) { return 0, h.outer.Update(k, inner, ebpf.UpdateAny) })
	if err != nil {
		return fmt.Errorf("put the host table of %s: %w", k.Rule(), err)
	}
	h.reserved.n = used + uint64(n)
	return nil
}

// remove deletes rule k's host table, if it has one.
func (h hostTables[K]) remove(k K) error {
	return h.withTable(k, func(had uint64) error {
		if err := h.outer.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete the hosts of %s: %w", k.Rule(), err)
		}
		h.reserved.n -= had
		return nil
	})
}

// prepare is the hosts' step of prepareOptions: a rule whose host
// capacity changes to a new one that is not 0 gets a new, empty table of
// that capacity before its trie value says so (a rule added anew gets one
// even if a killed change left one under its key). An unchanged capacity
// keeps the table and its hosts.
func (h hostTables[K]) prepare(k K, old, new Options) error {
	if new.Hosts == 0 || new.Hosts == old.Hosts {
		return nil
	}
	return h.swap(k, new.Hosts)
}

// cleanup is the hosts' step of cleanupOptions: a rule that had hosts and
// has none now (or was deleted) loses its table.
func (h hostTables[K]) cleanup(k K, old, new Options) error {
	if old.Hosts == 0 || new.Hosts != 0 {
		return nil
	}
	return h.remove(k)
}

// HostStats is one host of a rule with its stats summed over CPUs.
type HostStats struct {
	Host  netip.Addr
	Stats Stats
}

// RuleHosts is a rule's per-host breakdown as a reader sees it: its rows,
// read first, then its total, read after.
type RuleHosts struct {
	Rule    Rule
	Options Options
	// Hosts are the rows, in the table's order.
	Hosts []HostStats
	// Total is the rule's stats, read after the rows: every frame a row
	// holds is in it (the program counts the total first).
	Total Stats
}

// Other is the "other hosts" remainder: the total minus the rows, per
// direction, packets and bytes. It holds the frames of hosts that found
// no room, those counted before the option was set, and those of rows
// dropped since.
func (h RuleHosts) Other() Stats {
	rem := h.Total
	for _, row := range h.Hosts {
		rem = rem.minus(row.Stats)
	}
	return rem
}

// minus returns s - o, counter by counter.
func (s Stats) minus(o Stats) Stats {
	return Stats{
		In:  Counter{s.In.Packets - o.In.Packets, s.In.Bytes - o.In.Bytes},
		Out: Counter{s.Out.Packets - o.Out.Packets, s.Out.Bytes - o.Out.Bytes},
	}
}

// Hosts returns the per-host breakdown of exactly the rule r (no
// longest-prefix match), which must have the option: its rows first, then
// its total. The caller holds the pin directory's lock, shared or
// exclusive.
func (s *Set) Hosts(r Rule) (RuleHosts, error) {
	if r.Addr().Is4() {
		return readHosts(s.v4(), r)
	}
	return readHosts(s.v6(), r)
}

// ErrNoHosts says that a rule does not have the per-host option.
var ErrNoHosts = errors.New("the rule does not count per host (add it again with --hosts N)")

func readHosts[K key](f family[K], r Rule) (RuleHosts, error) {
	k := f.keyOf(r)
	o, has, err := f.options(k)
	switch {
	case err != nil:
		return RuleHosts{}, err
	case !has:
		return RuleHosts{}, fmt.Errorf("%w %s", ErrUnknownRule, r)
	case o.Hosts == 0:
		return RuleHosts{}, fmt.Errorf("%s: %w", r, ErrNoHosts)
	}
	out := RuleHosts{Rule: r, Options: o}
	inner, err := f.hosts.table(k)
	if err != nil {
		return RuleHosts{}, err
	}
	if inner != nil {
		defer inner.Close()
		err := readHostTable(inner, func(a netip.Addr, st Stats) { out.Hosts = append(out.Hosts, HostStats{a, st}) })
		if err != nil {
			return RuleHosts{}, fmt.Errorf("read the hosts of %s: %w", r, err)
		}
	}
	if out.Total, err = f.lookup(r); err != nil {
		return RuleHosts{}, err
	}
	return out, nil
}

// readHostTable calls fn with every host of a host table and its stats
// summed over CPUs.
func readHostTable(m *ebpf.Map, fn func(netip.Addr, Stats)) error {
	cpus := ebpf.MustPossibleCPU()
	if m.KeySize() == 4 {
		return readBatches(m, cpus, func(a [4]byte, v []Stats) { fn(netip.AddrFrom4(a), SumCPUs(v)) })
	}
	return readBatches(m, cpus, func(a [16]byte, v []Stats) { fn(netip.AddrFrom16(a), SumCPUs(v)) })
}

// HostsClear empties the host table of exactly the rule r, which must
// have the option: a new, empty table of the same capacity takes its
// place in one update. Its rows move into the remainder; a frame counted
// into the old table while it goes is in the remainder too, never lost
// nor counted twice. The caller holds the pin directory's exclusive lock.
func (s *Set) HostsClear(r Rule) error {
	if r.Addr().Is4() {
		return clearHosts(s.v4(), r)
	}
	return clearHosts(s.v6(), r)
}

func clearHosts[K key](f family[K], r Rule) error {
	k := f.keyOf(r)
	o, has, err := f.options(k)
	switch {
	case err != nil:
		return err
	case !has:
		return fmt.Errorf("%w %s", ErrUnknownRule, r)
	case o.Hosts == 0:
		return fmt.Errorf("%s: %w", r, ErrNoHosts)
	}
	return f.hosts.swap(k, o.Hosts)
}

// restoringHosts makes the host rows of saved the rows that the host
// tables made for these rules take, until the function it returns is
// called: RestoreRules restores a rule's host rows so, in the new table,
// before the table and the rule are in place, so that no frame is lost or
// counted twice. A rule that keeps its table (present, or with an
// unchanged capacity) keeps its rows.
func (s *Set) restoringHosts(saved []RuleStats) (done func()) {
	rows := map[Rule][]HostStats{}
	for _, rs := range saved {
		if len(rs.Hosts) > 0 {
			rows[rs.Rule] = rs.Hosts
		}
	}
	c := s.counts()
	c.v4.restoring, c.v6.restoring = rows, rows
	return func() { c.v4.restoring, c.v6.restoring = nil, nil }
}

// fillHosts puts rows into a new host table, each host's counters on the
// first CPU's slot (zero on the others). A row that finds the table full
// is left out: its counts stay in the rule's remainder.
func fillHosts(inner *ebpf.Map, rows []HostStats) error {
	perCPU := make([]Stats, ebpf.MustPossibleCPU())
	for _, row := range rows {
		perCPU[0] = row.Stats
		err := retryNoMem(func() (int, error) { return 0, inner.Update(row.Host.AsSlice(), perCPU, ebpf.UpdateNoExist) })
		if errors.Is(err, unix.E2BIG) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("host %s: %w", row.Host, err)
		}
	}
	return nil
}

// SavedHosts returns the host rows of every rule whose host table has
// any, by rule: what save reads, before it reads the totals (Stats), so
// that every saved row is in its saved total.
func (s *Set) SavedHosts() (map[Rule][]HostStats, error) {
	all := map[Rule][]HostStats{}
	if err := savedHosts(s.v4(), all); err != nil {
		return nil, err
	}
	return all, savedHosts(s.v6(), all)
}

func savedHosts[K key](f family[K], all map[Rule][]HostStats) error {
	var k K
	var inner *ebpf.Map
	it := f.hosts.outer.Iterate()
	for it.Next(&k, &inner) {
		r := k.Rule()
		err := readHostTable(inner, func(a netip.Addr, st Stats) { all[r] = append(all[r], HostStats{a, st}) })
		inner.Close()
		if err != nil {
			return fmt.Errorf("read the hosts of %s: %w", r, err)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read the host tables: %w", err)
	}
	return nil
}

// HostsUsage is a family's host entries: Rules have host tables, which
// hold Reserved entries together, of the family's Capacity, and Used of
// them are taken.
type HostsUsage struct {
	Rules                    int
	Used, Reserved, Capacity uint64
}

// HostsUsage returns the host entries of each family (see HostsUsage):
// what status shows.
func (s *Set) HostsUsage() (v4, v6 HostsUsage, err error) {
	if v4, err = s.hosts4().usage(true); err != nil {
		return
	}
	v6, err = s.hosts6().usage(true)
	return
}

// usage reads the family's HostsUsage, Used only when used is set.
func (h hostTables[K]) usage(used bool) (HostsUsage, error) {
	u := HostsUsage{Capacity: uint64(h.outer.MaxEntries())}
	var k K
	var inner *ebpf.Map
	it := h.outer.Iterate()
	for it.Next(&k, &inner) {
		u.Rules++
		u.Reserved += uint64(inner.MaxEntries())
		var n uint64
		var err error
		if used {
			n, err = countKeys(inner)
		}
		inner.Close()
		if err != nil {
			return HostsUsage{}, fmt.Errorf("read the hosts of %s: %w", k.Rule(), err)
		}
		u.Used += n
	}
	if err := it.Err(); err != nil {
		return HostsUsage{}, fmt.Errorf("read the host tables: %w", err)
	}
	return u, nil
}

// countKeys returns how many keys m holds, walking them one by one.
func countKeys(m *ebpf.Map) (uint64, error) {
	var n uint64
	key := make([]byte, m.KeySize())
	next := make([]byte, m.KeySize())
	err := m.NextKey(nil, next)
	for err == nil {
		n++
		key, next = next, key
		err = m.NextKey(key, next)
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return n, nil
	}
	return 0, err
}

// RemoveHostOrphans deletes the host tables that no rule with the option
// has: those a change that was killed left between putting a new rule's
// table and inserting the rule, or between removing a rule (or its
// option) and its table. It returns how many it deleted.
func (s *Set) RemoveHostOrphans() (int, error) {
	n4, err := removeHostOrphans(s.v4())
	if err != nil {
		return 0, err
	}
	n6, err := removeHostOrphans(s.v6())
	return n4 + n6, err
}

func removeHostOrphans[K key](f family[K]) (int, error) {
	keys, err := f.hosts.keys()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		o, has, err := f.options(k)
		if err != nil {
			return n, err
		}
		if has && o.Hosts > 0 {
			continue
		}
		if err := f.hosts.remove(k); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// HostEntryMemory returns the bytes of kernel memory that one host entry
// takes in a rule's host table, IPv4 (v4) or IPv6, on cpus possible CPUs,
// as the kernel counts an entry of a per-CPU hash that is not
// preallocated (htab_map_mem_usage in kernel/bpf/hashtab.c): the element
// (elemSize and the key rounded up to 8 bytes), the free-list node of the
// element and of its per-CPU value with the value's pointer (24 bytes),
// and the 32-byte value once per possible CPU. The table's buckets come
// on top, once per table (HostTableMemory).
func HostEntryMemory(v4 bool, cpus int) uint64 {
	addr := uint64(16)
	if v4 {
		addr = 4
	}
	return elemSize + roundUp8(addr) + 3*8 + roundUp8(statsSize)*uint64(cpus)
}

// HostTableMemory returns the bytes of kernel memory that a rule's host
// table of n hosts takes as soon as it is made, before any host: the map
// and its buckets (statsMemory's terms).
func HostTableMemory(n uint32) uint64 { return statsMemory(4, n, false, 1) }

// HostsMemory returns the bytes of kernel memory that the two outer maps
// of the host tables of a set of capacity c reserve when they are made:
// their buckets, one per host entry of the capacity rounded up to a power
// of two.
func (c Capacity) HostsMemory() uint64 { return 2 * statsMemory(key4Size, c.hostCapacity(), false, 1) }

// EachHosts calls fn with the per-host breakdown of every rule counted
// per host (RuleHosts: each rule's rows read before its total), IPv4
// then IPv6, one rule at a time: what the exporter reads. The caller
// holds the pin directory's lock, shared or exclusive.
func (s *Set) EachHosts(fn func(RuleHosts)) error {
	if err := eachHosts(s.v4(), fn); err != nil {
		return err
	}
	return eachHosts(s.v6(), fn)
}

func eachHosts[K key](f family[K], fn func(RuleHosts)) error {
	keys, err := f.hosts.keys()
	if err != nil {
		return err
	}
	for _, k := range keys {
		h, err := readHosts(f, k.Rule())
		switch {
		case errors.Is(err, ErrUnknownRule) || errors.Is(err, ErrNoHosts):
			// A table that a killed change left, which the next
			// change removes (RemoveHostOrphans).
		case err != nil:
			return err
		default:
			fn(h)
		}
	}
	return nil
}

// keys returns the rule keys of the outer map.
func (h hostTables[K]) keys() ([]K, error) {
	var keys []K
	var k K
	var id uint32
	it := h.outer.Iterate()
	for it.Next(&k, &id) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read the host tables: %w", err)
	}
	return keys, nil
}
