package maps

import (
	"errors"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// AddRules adds many rules at once, as Add adds one: first the stats
// entries that are missing, then the rules that are missing, in batches of
// map updates (one update at a time where the kernel cannot batch). Rules
// that exist keep their counters, and a rule may be given more than once.
// It returns how many rules were new. The caller must hold the pin
// directory's Lock.
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
	existing, err := f.statsKeys()
	if err != nil {
		return 0, nil, err
	}
	// Rules whose stats entry is missing are new; the others are new too
	// if the trie lacks them (left behind by an interrupted delete).
	var newStats, newRules []K
	seen := make(map[K]bool, len(keys))
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		if !existing[k] {
			newStats = append(newStats, k)
			newRules = append(newRules, k)
		} else if has, err := f.has(k); err != nil {
			return 0, nil, err
		} else if !has {
			newRules = append(newRules, k)
		}
	}
	ncpu := ebpf.MustPossibleCPU()
	zero := make([]Stats, min(len(newStats), batchSize)*ncpu)
	made, err := update(f.stats, newStats, func(batch []K) []Stats { return zero[:len(batch)*ncpu] })
	if err != nil {
		deleteKeys(f.stats, newStats[:made])
		return 0, nil, fullOr(err, f.stats, "create stats entries")
	}
	prefixlens := make([]uint32, min(len(newRules), batchSize))
	made, err = update(f.rules, newRules, func(batch []K) []uint32 {
		for i, k := range batch {
			prefixlens[i] = uint32(k.Rule().Bits())
		}
		return prefixlens[:len(batch)]
	})
	undo = func() {
		deleteKeys(f.rules, newRules[:made])
		deleteKeys(f.stats, newStats)
	}
	if err != nil {
		undo()
		return 0, nil, fullOr(err, f.rules, "add rules")
	}
	return len(newRules), undo, nil
}

// statsKeys reads the keys of the stats table.
func (f family[K]) statsKeys() (map[K]bool, error) {
	set := make(map[K]bool)
	err := readBatches(f.stats, ebpf.MustPossibleCPU(), func(k K, _ []Stats) { set[k] = true })
	return set, err
}

// update writes keys to m with the values that values gives for a batch of
// keys (as many per key as m has per key), in batches where the kernel can,
// and returns how many keys it wrote, also on error: keys[:n] are written.
//
// A map that is not preallocated takes each new entry's memory from caches
// the kernel refills in the background, and a burst of updates can find
// them empty (ENOMEM): update waits for the refill, giving up only when no
// entry could be added for a while.
func update[K key, V any](m *ebpf.Map, keys []K, values func(batch []K) []V) (n int, err error) {
	stalled := time.Duration(0)
	for n < len(keys) {
		batch := keys[n:min(len(keys), n+batchSize)]
		vals := values(batch)
		done, err := m.BatchUpdate(batch, vals, nil)
		if errors.Is(err, ebpf.ErrNotSupported) {
			done, err = updateEach(m, batch, vals)
		}
		n += done
		if done > 0 {
			stalled = 0
		}
		if errors.Is(err, unix.ENOMEM) && stalled < refillWait {
			time.Sleep(time.Millisecond)
			stalled += time.Millisecond
			continue
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// refillWait is how long update waits for the kernel to find memory for
// one more entry.
const refillWait = 5 * time.Second

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
