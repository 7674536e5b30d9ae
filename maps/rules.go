package maps

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrUnknownRule says that a rule is not in the rule trie.
var ErrUnknownRule = errors.New("no such rule")

// ErrFull says that a family's maps hold as many rules as they can.
var ErrFull = errors.New("the rule maps are full")

// RuleStats is a rule with its options and its stats summed over CPUs.
// EachStats, which may read the stats tables alone, leaves Options zero.
type RuleStats struct {
	Rule    Rule
	Options Options
	Stats   Stats
	// Hosts are the rule's host rows, for save and restore (see
	// Set.SavedHosts); nil elsewhere.
	Hosts []HostStats
}

// key is a rule key of either family.
type key interface {
	Key4 | Key6
	Rule() Rule
}

// family is the pair of maps of one address family, with its rules'
// host tables.
type family[K key] struct {
	rules, stats *ebpf.Map
	keyOf        func(Rule) K
	// iface and registry are the per-interface rows and the registry of
	// attachments (interfaces.go).
	iface, registry *ebpf.Map
	// hosts are the per-host tables (hosts.go).
	hosts hostTables[K]
}

func (s *Set) v4() family[Key4] {
	return family[Key4]{s.RulesV4, s.StatsV4, Key4Of, s.IfaceV4, s.Registry, s.hosts4()}
}
func (s *Set) v6() family[Key6] {
	return family[Key6]{s.RulesV6, s.StatsV6, Key6Of, s.IfaceV6, s.Registry, s.hosts6()}
}

// Add adds a rule with options o: first its zero stats entry, then what
// its options need (prepareOptions), then the rule, so that the XDP
// program never matches a rule it cannot count (what a kill between
// leaves: the table in internal/pindir/doc.go). A rule that exists (is in
// the trie) keeps its counters, and gets options o if it had others (see
// setOptions); added reports whether the rule is new, changed whether it
// existed with other options.
func (s *Set) Add(r Rule, o Options) (added, changed bool, err error) {
	if err := o.Check(); err != nil {
		return false, false, err
	}
	if r.Addr().Is4() {
		return s.v4().add(r, o)
	}
	return s.v6().add(r, o)
}

func (f family[K]) add(r Rule, o Options) (added, changed bool, err error) {
	k := f.keyOf(r)
	old, has, err := f.options(k)
	if err != nil {
		return false, false, err
	}
	if has {
		if old == o {
			return false, false, nil
		}
		return false, true, f.setOptions(k, old, o)
	}
	// The rule is new: its stats entry starts from zero, whatever a
	// killed change may have left under its key.
	zero := make([]Stats, ebpf.MustPossibleCPU())
	if err := retryNoMem(func() (int, error) { return 0, f.stats.Update(k, zero, ebpf.UpdateAny) }); err != nil {
		return false, false, fullOr(err, f.stats, "create stats entry of "+r.String())
	}
	if err := f.prepareOptions(k, Options{}, o); err != nil {
		f.stats.Delete(k)
		return false, false, err
	}
	if err := retryNoMem(func() (int, error) { return 0, f.rules.Update(k, o.Value(r.Bits()), ebpf.UpdateAny) }); err != nil {
		f.cleanupOptions(k, o, Options{})
		f.stats.Delete(k)
		return false, false, fullOr(err, f.rules, "add rule "+r.String())
	}
	return true, false, nil
}

// setOptions changes the options of the rule of key k, which the trie
// holds, from old to new, its counters kept: what the new options need
// first (prepareOptions), then the trie value, then the removal of what
// only the old ones needed (cleanupOptions).
func (f family[K]) setOptions(k K, old, new Options) error {
	if err := f.prepareOptions(k, old, new); err != nil {
		return err
	}
	if err := f.rules.Update(k, new.Value(k.Rule().Bits()), ebpf.UpdateExist); err != nil {
		return fmt.Errorf("set the options of %s: %w", k.Rule(), err)
	}
	return f.cleanupOptions(k, old, new)
}

// retryNoMem runs an insert, again while it fails with ENOMEM, until it
// has failed so for refillWait with no entry written in between. insert
// returns how many entries it wrote (a batch can write some, then fail).
// Every insert into the maps goes through it.
//
// A map that is not preallocated takes each new entry's memory from caches
// the kernel refills in the background, and a burst of updates can find
// them empty (ENOMEM): retryNoMem waits for the refill.
func retryNoMem(insert func() (wrote int, err error)) error {
	var waited time.Duration
	for {
		wrote, err := insert()
		if wrote > 0 {
			waited = 0
		}
		if !errors.Is(err, unix.ENOMEM) || waited >= refillWait {
			return err
		}
		time.Sleep(time.Millisecond)
		waited += time.Millisecond
	}
}

// refillWait is how long retryNoMem waits for the kernel to find memory
// for one more entry.
const refillWait = 5 * time.Second

// fullOr turns a map's "no room" error (E2BIG from a hash, ENOSPC from a
// trie) into ErrFull.
func fullOr(err error, m *ebpf.Map, what string) error {
	if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("%w (%d rules per family)", ErrFull, m.MaxEntries())
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Delete removes a rule, then its stats entry.
func (s *Set) Delete(r Rule) error {
	if r.Addr().Is4() {
		return s.v4().delete(r)
	}
	return s.v6().delete(r)
}

func (f family[K]) delete(r Rule) error {
	k := f.keyOf(r)
	old, has, err := f.options(k)
	if err != nil {
		return err
	}
	if !has {
		return fmt.Errorf("%w %s", ErrUnknownRule, r)
	}
	if err := f.rules.Delete(k); errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("%w %s", ErrUnknownRule, r)
	} else if err != nil {
		return fmt.Errorf("delete rule %s: %w", r, err)
	}
	if err := f.stats.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete stats of %s: %w", r, err)
	}
	return f.cleanupOptions(k, old, Options{})
}

// Lookup returns the stats of exactly this rule (no longest-prefix match).
func (s *Set) Lookup(r Rule) (Stats, error) {
	if r.Addr().Is4() {
		return s.v4().lookup(r)
	}
	return s.v6().lookup(r)
}

func (f family[K]) lookup(r Rule) (Stats, error) {
	k := f.keyOf(r)
	if has, err := f.has(k); err != nil {
		return Stats{}, err
	} else if !has {
		return Stats{}, fmt.Errorf("%w %s", ErrUnknownRule, r)
	}
	var perCPU []Stats
	if err := f.stats.Lookup(k, &perCPU); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return Stats{}, fmt.Errorf("look up stats of %s: %w", r, err)
	}
	return SumCPUs(perCPU), nil
}

// has reports whether the trie holds exactly the rule k.
func (f family[K]) has(k K) (bool, error) {
	_, has, err := f.options(k)
	return has, err
}

// options returns the options of the rule k, and whether the trie holds
// exactly that rule. A trie lookup finds the longest rule matching k's
// network, whose value holds that rule's prefix length: k is a rule when
// that is k's own.
func (f family[K]) options(k K) (Options, bool, error) {
	var v uint32
	err := f.rules.Lookup(k, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Options{}, false, nil
	}
	if err != nil {
		return Options{}, false, fmt.Errorf("look up rule %s: %w", k.Rule(), err)
	}
	if int(v&PrefixMask) != k.Rule().Bits() {
		return Options{}, false, nil
	}
	return OptionsOf(v), true, nil
}

// Listed is a rule with its options.
type Listed struct {
	Rule    Rule
	Options Options
}

// String returns the rule, and its options in parentheses if it has any.
func (l Listed) String() string {
	if l.Options == (Options{}) {
		return l.Rule.String()
	}
	return l.Rule.String() + " (" + l.Options.String() + ")"
}

// Rules returns every rule with its options, IPv4 then IPv6, each family
// sorted by address and then prefix length.
func (s *Set) Rules() ([]Listed, error) {
	v4, err := s.v4().list()
	if err != nil {
		return nil, err
	}
	v6, err := s.v6().list()
	if err != nil {
		return nil, err
	}
	return append(v4, v6...), nil
}

// batchSize is how many entries one batched map syscall moves.
const batchSize = 4096

// list reads the rule trie.
func (f family[K]) list() ([]Listed, error) {
	var rules []Listed
	if err := f.eachRule(func(k K, o Options) { rules = append(rules, Listed{k.Rule(), o}) }); err != nil {
		return nil, err
	}
	sortRules(rules, func(l Listed) Rule { return l.Rule })
	return rules, nil
}

// eachRule calls fn with every key of the rule trie and the rule's
// options, in the trie's order.
func (f family[K]) eachRule(fn func(K, Options)) error {
	if err := readBatches(f.rules, 1, func(k K, v []uint32) { fn(k, OptionsOf(v[0])) }); err != nil {
		return fmt.Errorf("read rules: %w", err)
	}
	return nil
}

// Stats returns every rule's stats, IPv4 then IPv6, in the order of Rules.
//
// It reads both tables of a family in batches and joins them, which takes
// memory in proportion to the rules: sorted, and right whether or not a
// killed change left stats entries without a rule, where EachStats is
// neither.
func (s *Set) Stats() ([]RuleStats, error) {
	v4, err := s.v4().all()
	if err != nil {
		return nil, err
	}
	v6, err := s.v6().all()
	if err != nil {
		return nil, err
	}
	return append(v4, v6...), nil
}

// all returns the family's rules, sorted, each with its stats: the rule
// trie and the stats table read in batches, both sorted, and merged (a
// stats entry without a rule, left by a change that was killed, is left
// out; a rule without one, which no change leaves, counts zero).
func (f family[K]) all() ([]RuleStats, error) {
	rules, err := f.list()
	if err != nil {
		return nil, err
	}
	var stats []RuleStats
	err = f.eachEntry(func(k K, st Stats) { stats = append(stats, RuleStats{Rule: k.Rule(), Stats: st}) })
	if err != nil {
		return nil, err
	}
	sortRules(stats, func(rs RuleStats) Rule { return rs.Rule })
	out := make([]RuleStats, len(rules))
	j := 0
	for i, l := range rules {
		r := l.Rule
		for j < len(stats) && compareRules(stats[j].Rule, r) < 0 {
			j++
		}
		out[i].Rule, out[i].Options = r, l.Options
		if j < len(stats) && stats[j].Rule == r {
			out[i].Stats = stats[j].Stats
		}
	}
	return out, nil
}

// EachStats calls fn with every rule's stats summed over CPUs, IPv4 then
// IPv6, in the maps' own order: as Stats, without collecting or sorting,
// so that a reader of every rule such as the Prometheus exporter needs
// memory for one batch of rules only. The caller holds the pin
// directory's lock, shared or exclusive.
//
// The rules are the tries' (the truth of which rules exist): a stats
// entry without a rule, left by a change that was killed, is never seen.
// With NoOrphans the stats tables hold exactly the rules' entries, and
// EachStats reads them alone, in batches; without, it reads the tries in
// batches and looks up each rule's stats entry: a system call a rule.
func (s *Set) EachStats(fn func(RuleStats)) error {
	read4, read6 := s.v4().eachStats, s.v6().eachStats
	if s.NoOrphans {
		read4, read6 = s.v4().eachEntry, s.v6().eachEntry
	}
	if err := read4(func(k Key4, st Stats) { fn(RuleStats{Rule: k.Rule(), Stats: st}) }); err != nil {
		return err
	}
	return read6(func(k Key6, st Stats) { fn(RuleStats{Rule: k.Rule(), Stats: st}) })
}

// eachStats calls fn with every rule of the trie and its stats, per-CPU
// values summed: a batch of rules from the trie, then each rule's stats
// entry (a rule whose entry is missing, which no change leaves, counts
// zero).
func (f family[K]) eachStats(fn func(K, Stats)) error {
	perCPU := make([]Stats, ebpf.MustPossibleCPU())
	var failed error
	err := f.eachRule(func(k K, _ Options) {
		if failed != nil {
			return
		}
		err := f.stats.Lookup(k, perCPU)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			fn(k, Stats{})
		case err != nil:
			failed = fmt.Errorf("look up stats of %s: %w", k.Rule(), err)
		default:
			fn(k, SumCPUs(perCPU))
		}
	})
	return cmp.Or(failed, err)
}

// eachEntry calls fn with every entry of the stats table, per-CPU values
// summed, read in batches: the rules' stats when no change was killed.
func (f family[K]) eachEntry(fn func(K, Stats)) error {
	err := readBatches(f.stats, ebpf.MustPossibleCPU(), func(k K, perCPU []Stats) { fn(k, SumCPUs(perCPU)) })
	if err != nil {
		return fmt.Errorf("read stats: %w", err)
	}
	return nil
}

// readBatches calls fn with every key of m and its values (per of them: one,
// or one per CPU), reading m in batches where the kernel can (hash maps
// 5.6, LPM tries 5.13), else key by key.
func readBatches[K, V any](m *ebpf.Map, per int, fn func(K, []V)) error {
	keys := make([]K, batchSize)
	values := make([]V, batchSize*per)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, values, nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			return readEach(m, per, fn)
		}
		for i := range n {
			fn(keys[i], values[i*per:(i+1)*per])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readEach is readBatches one key at a time, for kernels without batch
// lookups on m's type of map.
func readEach[K, V any](m *ebpf.Map, per int, fn func(K, []V)) error {
	var k K
	values := make([]V, per)
	it := m.Iterate()
	if m.Type() == ebpf.PerCPUHash {
		for it.Next(&k, &values) {
			fn(k, values)
		}
	} else {
		for it.Next(&k, &values[0]) {
			fn(k, values)
		}
	}
	return it.Err()
}

func sortRules[T any](s []T, rule func(T) Rule) {
	slices.SortFunc(s, func(a, b T) int { return compareRules(rule(a), rule(b)) })
}

// compareRules orders rules by address, then prefix length.
func compareRules(a, b Rule) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// RemoveOrphans deletes the stats entries that have no rule: those a change
// that was killed left between writing a rule's stats entry and inserting
// the rule, or between deleting a rule and its stats entry. It returns how
// many it deleted.
func (s *Set) RemoveOrphans() (int, error) {
	n4, err := removeOrphans(s.v4())
	if err != nil {
		return 0, err
	}
	n6, err := removeOrphans(s.v6())
	return n4 + n6, err
}

func removeOrphans[K key](f family[K]) (int, error) {
	rules := make(map[K]bool)
	if err := f.eachRule(func(k K, _ Options) { rules[k] = true }); err != nil {
		return 0, err
	}
	var orphans []K
	err := readBatches(f.stats, ebpf.MustPossibleCPU(), func(k K, _ []Stats) {
		if !rules[k] {
			orphans = append(orphans, k)
		}
	})
	if err != nil {
		return 0, fmt.Errorf("read stats: %w", err)
	}
	for _, k := range orphans {
		if err := f.stats.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, fmt.Errorf("delete the stats entry of %s, which has no rule: %w", k.Rule(), err)
		}
	}
	return len(orphans), nil
}
