package maps

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// EachStats calls fn with every rule's stats summed over CPUs, IPv4 then
// IPv6, in the stats tables' own order. It reads the tables in batches as
// Stats does, but neither collects nor sorts the rules: the fast path for
// readers of every rule, such as the Prometheus exporter.
func (s *Set) EachStats(fn func(RuleStats)) error {
	if err := s.v4().each(fn); err != nil {
		return err
	}
	return s.v6().each(fn)
}

func (f family[K]) each(fn func(RuleStats)) error {
	ncpu := ebpf.MustPossibleCPU()
	keys := make([]K, batchSize)
	values := make([]Stats, batchSize*ncpu)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := f.stats.BatchLookup(&cursor, keys, values, nil)
		for i := range n {
			fn(RuleStats{keys[i].Rule(), SumCPUs(values[i*ncpu : (i+1)*ncpu])})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read stats: %w", err)
		}
	}
}
