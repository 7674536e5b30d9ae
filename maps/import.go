package maps

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
)

// AddRules adds many rules at once with options o, as Add adds one: a
// rule the trie lacks gets a fresh stats entry with zero counters
// (replacing any left without its rule), then what its options need,
// then enters the trie (crash steps: internal/pindir/doc.go); a rule the
// trie holds keeps its counters, and gets options o if it had others. A
// rule may be given more than once. It returns how many rules were new.
// The caller must hold the pin directory's exclusive lock.
//
// It is all or nothing: when anything fails, a full map included, or ctx is
// cancelled, the rules this call inserted and their stats entries are
// removed again, the options it changed are set back, and the error wraps
// the cause (ctx.Err() on cancel).
func (s *Set) AddRules(ctx context.Context, rules []Rule, o Options) (added int, err error) {
	if err := o.Check(); err != nil {
		return 0, err
	}
	var changes optionChanges
	added, undo, err := s.insert(ctx, len(rules), func(i int) RuleStats { return RuleStats{Rule: rules[i], Options: o} },
		func(r Rule, old Options) {
			if old != o {
				changes = append(changes, optionChange{r, old, o})
			}
		})
	if err != nil {
		return 0, err
	}
	if err := s.setOptions(changes); err != nil {
		undo()
		return 0, err
	}
	return added, nil
}

// optionChange is a rule whose options change from old to new.
type optionChange struct {
	rule     Rule
	old, new Options
}

// optionChanges are changes of options, in the order they are made.
type optionChanges []optionChange

// setOptions makes the changes in turn; when one fails, it sets the
// options it changed back, and returns the error.
func (s *Set) setOptions(changes optionChanges) error {
	for i, c := range changes {
		if err := s.setRuleOptions(c.rule, c.old, c.new); err != nil {
			for _, d := range slices.Backward(changes[:i]) {
				s.setRuleOptions(d.rule, d.new, d.old)
			}
			return err
		}
	}
	return nil
}

// setRuleOptions changes the options of rule r, which the trie holds,
// from old to new (family.setOptions).
func (s *Set) setRuleOptions(r Rule, old, new Options) error {
	if r.Addr().Is4() {
		return s.v4().setOptions(Key4Of(r), old, new)
	}
	return s.v6().setOptions(Key6Of(r), old, new)
}

// RestoreRules adds saved rules with their options and counters, as
// AddRules adds rules with zero ones: a rule the trie lacks gets a stats
// entry holding its saved totals (on the first CPU's slot, zero on the
// others) before it enters the trie, so that no packet is lost or counted
// twice; a rule the trie holds keeps counting untouched, its options too and is returned in present, once, in the order
// of Rules. When a rule is given more than once, its first item counts. It
// returns how many rules were restored, all or nothing and cancellable as
// AddRules. A restored rule with host rows (RuleStats.Hosts) gets them in
// its new host table before the table and the rule are in place (see
// restoringHosts).
func (s *Set) RestoreRules(ctx context.Context, saved []RuleStats) (restored int, present []Rule, err error) {
	for _, rs := range saved {
		if err := rs.Options.Check(); err != nil {
			return 0, nil, fmt.Errorf("%s: %w", rs.Rule, err)
		}
	}
	defer s.restoringHosts(saved)()
	restored, _, err = s.insert(ctx, len(saved), func(i int) RuleStats { return saved[i] },
		func(r Rule, _ Options) { present = append(present, r) })
	if err != nil {
		return 0, nil, err
	}
	return restored, present, nil
}

// insert adds the n rules that at gives, each absent one with the
// options and stats that at gives for it, calling present with each rule
// the trie holds already and its options. It returns how many rules were
// new and a function that takes them out again.
func (s *Set) insert(ctx context.Context, n int, at func(int) RuleStats, present func(Rule, Options)) (int, func(), error) {
	var v4 []entry[Key4]
	var v6 []entry[Key6]
	for i := range n {
		rs := at(i)
		if rs.Rule.Addr().Is4() {
			v4 = append(v4, entry[Key4]{Key4Of(rs.Rule), rs.Options, rs.Stats})
		} else {
			v6 = append(v6, entry[Key6]{Key6Of(rs.Rule), rs.Options, rs.Stats})
		}
	}
	n4, undo4, err := insertFamily(ctx, s.v4(), v4, present)
	if err != nil {
		return 0, nil, err
	}
	n6, undo6, err := insertFamily(ctx, s.v6(), v6, present)
	if err != nil {
		undo4()
		return 0, nil, err
	}
	return n4 + n6, func() { undo6(); undo4() }, nil
}

// entry is a rule key with the options and stats it starts from if it is
// new.
type entry[K sortKey[K]] struct {
	key     K
	options Options
	stats   Stats
}

// sortKey is a rule key that sorts, by address and then prefix length.
type sortKey[K any] interface {
	key
	compare(K) int
}

func (k Key4) compare(o Key4) int {
	return cmp.Or(bytes.Compare(k.Addr[:], o.Addr[:]), cmp.Compare(k.Prefixlen, o.Prefixlen))
}

func (k Key6) compare(o Key6) int {
	return cmp.Or(bytes.Compare(k.Addr[:], o.Addr[:]), cmp.Compare(k.Prefixlen, o.Prefixlen))
}

// insertFamily adds a family's rules that the trie lacks: first their
// stats entries, then the rules. A rule given more than once counts once,
// with its first stats. It returns how many rules were new and a function
// that takes out again what it made; on error it has done that already.
//
// Sorting the rules finds both the repeated ones and, merged with the
// sorted keys of the trie, the new ones, faster than a Go map would.
func insertFamily[K sortKey[K]](ctx context.Context, f family[K], in []entry[K], present func(Rule, Options)) (added int, undo func(), err error) {
	slices.SortStableFunc(in, func(a, b entry[K]) int { return a.key.compare(b.key) })
	in = slices.CompactFunc(in, func(a, b entry[K]) bool { return a.key == b.key })
	keys := make([]K, len(in))
	for i, e := range in {
		keys[i] = e.key
	}
	inTrie, err := held(f, keys)
	if err != nil {
		return 0, nil, err
	}
	var fresh []entry[K]
	for i, k := range keys {
		for len(inTrie) > 0 && inTrie[0].key.compare(k) < 0 {
			inTrie = inTrie[1:]
		}
		if len(inTrie) > 0 && inTrie[0].key == k {
			present(k.Rule(), inTrie[0].options)
			continue
		}
		fresh = append(fresh, in[i])
	}
	undo, err = write(ctx, f, fresh)
	if err != nil {
		return 0, nil, err
	}
	return len(fresh), undo, nil
}

// held returns the keys of f's trie with their options, sorted, or at
// least those of them that are among keys (sorted). It reads the trie in batches, unless the
// trie turns out much larger than keys or the kernel cannot read a trie
// in batches (before 5.13): then it looks each of keys up, so that the
// cost follows the smaller of the two.
func held[K sortKey[K]](f family[K], keys []K) ([]entry[K], error) {
	if len(keys) == 0 {
		return nil, nil
	}
	var held []entry[K]
	most := 4 * len(keys)
	batch := make([]K, min(batchSize, max(most, 64)))
	values := make([]uint32, len(batch))
	var cursor ebpf.MapBatchCursor
	for len(held) <= most {
		n, err := f.rules.BatchLookup(&cursor, batch, values, nil)
		for i := range n {
			held = append(held, entry[K]{key: batch[i], options: OptionsOf(values[i])})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			slices.SortFunc(held, func(a, b entry[K]) int { return a.key.compare(b.key) })
			return held, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read rules: %w", err)
		}
	}
	held = held[:0]
	for _, k := range keys {
		if o, has, err := f.options(k); err != nil {
			return nil, err
		} else if has {
			held = append(held, entry[K]{key: k, options: o})
		}
	}
	return held, nil
}

// write inserts entries that are new to the family's maps: each stats
// entry, then its rule. It returns a function that takes them out again;
// on error, a full map included, or when ctx is cancelled, it has done that
// already.
//
// The work is cut into chunks of chunkSize rules, each written as a batch
// of stats entries and then a batch of rules, and one worker per CPU (as
// many as GOMAXPROCS), each on its own thread, takes chunks in turn.
//
// Why, as measured: docs/performance.md, "Why a first import costs what it does";
// for preallocated stats tables, docs/prealloc.md, "How import chooses for
// preallocated tables".
func write[K sortKey[K]](ctx context.Context, f family[K], in []entry[K]) (undo func(), err error) {
	keys := make([]K, len(in))
	for i, e := range in {
		keys[i] = e.key
	}
	chunks := (len(keys) + chunkSize - 1) / chunkSize
	type progress struct{ stats, options, rules int }
	done := make([]progress, chunks)
	undo = func() {
		for c, d := range done {
			deleteKeys(f.rules, keys[c*chunkSize:][:d.rules])
		}
		for c, d := range done {
			for _, e := range in[c*chunkSize:][:d.options] {
				f.cleanupOptions(e.key, e.options, Options{})
			}
		}
		for c, d := range done {
			deleteKeys(f.stats, keys[c*chunkSize:][:d.stats])
		}
	}
	var (
		next    atomic.Int64
		errOnce sync.Once
		failed  atomic.Bool
		wg      sync.WaitGroup
	)
	fail := func(e error) {
		errOnce.Do(func() { err = e })
		failed.Store(true)
	}
	ncpu := ebpf.MustPossibleCPU()
	for range min(runtime.GOMAXPROCS(0), chunks) {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			vals := statsValues(chunkSize * ncpu)
			values := make([]uint32, chunkSize)
			for !failed.Load() {
				if e := ctx.Err(); e != nil {
					fail(fmt.Errorf("interrupted: %w", e))
					return
				}
				c := int(next.Add(1) - 1)
				if c >= chunks {
					return
				}
				off := c * chunkSize
				chunk := keys[off:min(len(keys), off+chunkSize)]
				entries := in[off : off+len(chunk)]
				v := vals[:len(chunk)*ncpu]
				for i, e := range entries {
					e.stats.put(v[i*ncpu])
					for cpu := 1; cpu < ncpu; cpu++ {
						clear(v[i*ncpu+cpu])
					}
				}
				n, e := update(f.stats, chunk, v)
				done[c].stats = n
				if e != nil {
					fail(fullOr(e, f.stats, "create stats entries"))
					return
				}
				for i, en := range entries {
					if e := f.prepareOptions(en.key, Options{}, en.options); e != nil {
						fail(e)
						return
					}
					done[c].options = i + 1
					values[i] = en.options.Value(en.key.Rule().Bits())
				}
				n, e = update(f.rules, chunk, values[:len(chunk)])
				done[c].rules = n
				if e != nil {
					fail(fullOr(e, f.rules, "add rules"))
					return
				}
			}
		})
	}
	wg.Wait()
	if err != nil {
		undo()
		return nil, err
	}
	return undo, nil
}

// statsValues returns n stats values as byte slices in the stats tables'
// layout (Stats.put), one buffer underneath. cilium/ebpf passes them to
// the kernel as they are, where it marshals each Stats value of a []Stats
// with reflection: perf charged that 14% of the CPU time of a first
// import of 1,000,000 rules into preallocated tables, more than the
// kernel took to create their stats entries.
func statsValues(n int) [][]byte {
	buf := make([]byte, n*statsSize)
	vals := make([][]byte, n)
	for i := range vals {
		vals[i] = buf[i*statsSize:][:statsSize]
	}
	return vals
}

// chunkSize is how many rules write hands a worker at a time.
const chunkSize = 256

// update writes keys to m with vals (as many per key as m has per key), as
// one batch where the kernel can, and returns how many keys it wrote, also
// on error: keys[:n] are written.
func update[K key, V any](m *ebpf.Map, keys []K, vals []V) (n int, err error) {
	per := len(vals) / len(keys)
	err = retryNoMem(func() (int, error) {
		d, err := m.BatchUpdate(keys[n:], vals[n*per:], nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			d, err = updateEach(m, keys[n:], vals[n*per:])
		}
		n += d
		return d, err
	})
	return n, err
}

// updateEach writes keys one at a time, stopping at the first error, and
// returns how many it wrote, as a batch update does.
func updateEach[K key, V any](m *ebpf.Map, keys []K, vals []V) (int, error) {
	per := len(vals) / len(keys)
	for i, k := range keys {
		if err := m.Update(k, vals[i*per:(i+1)*per], ebpf.UpdateAny); err != nil {
			return i, err
		}
	}
	return len(keys), nil
}

// deleteKeys removes keys from m, in batches where the kernel can, ignoring
// errors: it undoes what this process just made.
func deleteKeys[K key](m *ebpf.Map, keys []K) {
	for len(keys) > 0 {
		batch := keys[:min(len(keys), batchSize)]
		if _, err := m.BatchDelete(batch, nil); err != nil {
			for _, k := range batch {
				m.Delete(k)
			}
		}
		keys = keys[len(batch):]
	}
}
