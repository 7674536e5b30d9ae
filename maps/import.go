package maps

import (
	"errors"

	"github.com/cilium/ebpf"
)

// AddRules adds many rules at once, as Add adds one: first the stats
// entries that are missing, then the rules that are missing, in batches of
// map updates (one update at a time where the kernel cannot batch). Rules
// that exist keep their counters, and a rule may be given more than once.
// It returns how many rules were new.
//
// It is all or nothing: when anything fails, a full map included, the rules
// and stats entries this call made are removed again.
func (s *Set) AddRules(rules []Rule) (added int, err error) {
	var v4 []Key4
	var v6 []Key6
	for _, r := range rules {
		if r.Addr().Is4() {
			v4 = append(v4, Key4Of(r))
		} else {
			v6 = append(v6, Key6Of(r))
		}
	}
	n4, undo4, err := addMany(s.v4(), v4)
	if err != nil {
		return 0, err
	}
	n6, _, err := addMany(s.v6(), v6)
	if err != nil {
		undo4()
		return 0, err
	}
	return n4 + n6, nil
}

// addMany adds a family's rules: missing stats entries, then missing rules.
// It returns how many rules were new and a function that takes out again
// what it made; on error it has done that already.
func addMany[K key](f family[K], keys []K) (added int, undo func(), err error) {
	ncpu := ebpf.MustPossibleCPU()
	zero := make([]Stats, min(len(keys), batchSize)*ncpu)
	newStats, err := insertNew(f.stats, keys, func(batch []K) []Stats { return zero[:len(batch)*ncpu] })
	if err != nil {
		deleteKeys(f.stats, newStats)
		return 0, nil, fullOr(err, f.stats, "create stats entries")
	}
	prefixlens := make([]uint32, min(len(keys), batchSize))
	newRules, err := insertNew(f.rules, keys, func(batch []K) []uint32 {
		for i, k := range batch {
			prefixlens[i] = uint32(k.Rule().Bits())
		}
		return prefixlens[:len(batch)]
	})
	undo = func() {
		deleteKeys(f.rules, newRules)
		deleteKeys(f.stats, newStats)
	}
	if err != nil {
		undo()
		return 0, nil, fullOr(err, f.rules, "add rules")
	}
	return len(newRules), undo, nil
}

// insertNew inserts every key that m does not hold yet, with the values
// that values gives for a batch of keys (as many per key as the map has
// per key), and returns the keys it inserted, also on error.
func insertNew[K key, V any](m *ebpf.Map, keys []K, values func(batch []K) []V) ([]K, error) {
	var inserted []K
	opts := &ebpf.BatchOptions{ElemFlags: uint64(ebpf.UpdateNoExist)}
	for len(keys) > 0 {
		batch := keys[:min(len(keys), batchSize)]
		vals := values(batch)
		n, err := m.BatchUpdate(batch, vals, opts)
		if errors.Is(err, ebpf.ErrNotSupported) {
			n, err = updateEach(m, batch, vals)
		}
		inserted = append(inserted, batch[:n]...)
		switch {
		case errors.Is(err, ebpf.ErrKeyExist):
			n++ // the key at n exists: keep it as it is
		case err != nil:
			return inserted, err
		}
		keys = keys[n:]
	}
	return inserted, nil
}

// updateEach inserts keys one at a time, stopping at the first error, and
// returns how many it inserted, as a batch update does.
func updateEach[K key, V any](m *ebpf.Map, keys []K, vals []V) (int, error) {
	per := len(vals) / len(keys)
	for i, k := range keys {
		if err := m.Update(k, vals[i*per:(i+1)*per], ebpf.UpdateNoExist); err != nil {
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
