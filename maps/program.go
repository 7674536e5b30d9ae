package maps

import "github.com/cilium/ebpf"

// LoadProgram loads the named program of a collection over this set: the
// collection's maps named as the set's are the set's maps, whatever
// capacity and flags the collection gives them.
func (s *Set) LoadProgram(spec *ebpf.CollectionSpec, name string) (*ebpf.Program, error) {
	replace := map[string]*ebpf.Map{}
	for n, m := range s.Replacements() {
		if ms, ok := spec.Maps[n]; ok {
			ms.MaxEntries, ms.Flags = m.MaxEntries(), m.Flags()
			replace[n] = m
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: replace})
	if err != nil {
		return nil, err
	}
	defer coll.Close()
	return coll.DetachProgram(name), nil
}
