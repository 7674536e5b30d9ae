package maps

import (
	"context"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// AddRules adds many rules at once, as Add adds one: a rule the trie lacks
// gets a fresh stats entry with zero counters (replacing any stats entry a
// crash left without its rule), then enters the trie; a rule the trie holds
// is left as it is, counters and all. A rule may be given more than once.
// It returns how many rules were new. The caller must hold the pin
// directory's Lock.
//
// It is all or nothing: when anything fails, a full map included, or ctx is
// cancelled, the rules this call inserted and their stats entries are
// removed again, and the error wraps the cause (ctx.Err() on cancel).
func (s *Set) AddRules(ctx context.Context, rules []Rule) (added int, err error) {
	return s.insert(ctx, len(rules), func(i int) (Rule, Stats) { return rules[i], Stats{} }, nil)
}

// RestoreRules adds saved rules with their counters, as AddRules adds rules
// with zero ones: a rule the trie lacks gets a stats entry holding its saved
// totals (on the first CPU's slot, zero on the others) before it enters the
// trie, so that no packet is lost or counted twice; a rule the trie holds
// keeps counting untouched and is returned in present, once. When a rule is
// given more than once, its first item counts. It returns how many rules
// were restored, all or nothing and cancellable as AddRules.
func (s *Set) RestoreRules(ctx context.Context, saved []RuleStats) (restored int, present []Rule, err error) {
	restored, err = s.insert(ctx, len(saved), func(i int) (Rule, Stats) { return saved[i].Rule, saved[i].Stats },
		func(r Rule) { present = append(present, r) })
	if err != nil {
		return 0, nil, err
	}
	return restored, present, nil
}

// insert adds the n rules that at gives, each absent one with the stats
// that at gives for it, calling present with each rule the trie holds
// already (present may be nil). It returns how many rules were new.
func (s *Set) insert(ctx context.Context, n int, at func(int) (Rule, Stats), present func(Rule)) (int, error) {
	var v4 entries[Key4]
	var v6 entries[Key6]
	for i := range n {
		r, st := at(i)
		if r.Addr().Is4() {
			v4.add(Key4Of(r), st)
		} else {
			v6.add(Key6Of(r), st)
		}
	}
	n4, undo4, err := insertFamily(ctx, s.v4(), v4, present)
	if err != nil {
		return 0, err
	}
	n6, _, err := insertFamily(ctx, s.v6(), v6, present)
	if err != nil {
		undo4()
		return 0, err
	}
	return n4 + n6, nil
}

// entries are rule keys with the stats each starts from if it is new.
type entries[K key] struct {
	keys  []K
	stats []Stats
}

func (e *entries[K]) add(k K, st Stats) {
	e.keys = append(e.keys, k)
	e.stats = append(e.stats, st)
}

// insertFamily adds a family's rules that the trie lacks: first their
// stats entries, then the rules. It returns how many rules were new and a
// function that takes out again what it made; on error it has done that
// already.
func insertFamily[K key](ctx context.Context, f family[K], in entries[K], present func(Rule)) (added int, undo func(), err error) {
	seen, err := f.ruleKeys()
	if err != nil {
		return 0, nil, err
	}
	var fresh entries[K]
	for i, k := range in.keys {
		switch seen[k] {
		case absent:
			fresh.add(k, in.stats[i])
		case inTrie:
			if present != nil {
				present(k.Rule())
			}
		default:
			continue
		}
		seen[k] = given
	}
	ncpu := ebpf.MustPossibleCPU()
	vals := make([]Stats, min(len(fresh.keys), batchSize)*ncpu)
	made, err := update(ctx, f.stats, fresh.keys, func(off int, batch []K) []Stats {
		v := vals[:len(batch)*ncpu]
		clear(v)
		for i := range batch {
			v[i*ncpu] = fresh.stats[off+i]
		}
		return v
	})
	if err != nil {
		deleteKeys(f.stats, fresh.keys[:made])
		return 0, nil, fullOr(err, f.stats, "create stats entries")
	}
	prefixlens := make([]uint32, min(len(fresh.keys), batchSize))
	made, err = update(ctx, f.rules, fresh.keys, func(_ int, batch []K) []uint32 {
		for i, k := range batch {
			prefixlens[i] = uint32(k.Rule().Bits())
		}
		return prefixlens[:len(batch)]
	})
	undo = func() {
		deleteKeys(f.rules, fresh.keys[:made])
		deleteKeys(f.stats, fresh.keys)
	}
	if err != nil {
		undo()
		return 0, nil, fullOr(err, f.rules, "add rules")
	}
	return len(fresh.keys), undo, nil
}

// What insertFamily knows of a key.
const (
	absent = iota // neither in the trie nor given yet
	inTrie        // in the trie, not given yet
	given         // given already: the next items of this rule change nothing
)

// ruleKeys reads the keys of the rule trie, in batches where the kernel
// can (5.13), each marked inTrie.
func (f family[K]) ruleKeys() (map[K]uint8, error) {
	set := make(map[K]uint8)
	err := readBatches(f.rules, 1, func(k K, _ []uint32) { set[k] = inTrie })
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return set, nil
}

// update writes keys to m with the values that values gives for the batch
// of keys starting at off (as many per key as m has per key), in batches
// where the kernel can, and returns how many keys it wrote, also on error:
// keys[:n] are written. It stops with an error wrapping ctx.Err() when ctx
// is cancelled.
func update[K key, V any](ctx context.Context, m *ebpf.Map, keys []K, values func(off int, batch []K) []V) (n int, err error) {
	for n < len(keys) {
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("interrupted: %w", err)
		}
		batch := keys[n:min(len(keys), n+batchSize)]
		vals := values(n, batch)
		done := 0
		err := retryNoMem(func() error {
			d, err := m.BatchUpdate(batch[done:], vals[done*len(vals)/len(batch):], nil)
			if errors.Is(err, ebpf.ErrNotSupported) {
				d, err = updateEach(m, batch[done:], vals[done*len(vals)/len(batch):])
			}
			done += d
			return err
		})
		n += done
		if err != nil {
			return n, err
		}
	}
	return n, nil
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
