package maps

// TEMPORARY: the foundation's API (branch options), until it is merged.

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

type Options struct {
	ByInterface bool
	Hosts       uint32
}

const (
	PrefixMask     = 0xff
	ByInterfaceBit = 1 << 8
	HostsShift     = 9
	MaxHosts       = 1<<(32-HostsShift) - 1
)

func (o Options) Value(bits int) uint32 {
	v := uint32(bits) | o.Hosts<<HostsShift
	if o.ByInterface {
		v |= ByInterfaceBit
	}
	return v
}

func OptionsOf(v uint32) Options {
	return Options{ByInterface: v&ByInterfaceBit != 0, Hosts: v >> HostsShift}
}

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

// StubAddHosts sets rule r's trie value to carry n hosts, with its table.
func (s *Set) StubAddHosts(r Rule, n uint32) error {
	if _, err := s.Add(r); err != nil {
		return err
	}
	if r.Addr().Is4() {
		f, h := s.v4(), s.hosts4()
		k := f.keyOf(r)
		old, _, _ := f.options(k)
		if err := h.prepare(k, old, Options{Hosts: n}); err != nil {
			return err
		}
		if err := f.rules.Put(k, Options{Hosts: n}.Value(r.Bits())); err != nil {
			return err
		}
		return h.cleanup(k, old, Options{Hosts: n})
	}
	f, h := s.v6(), s.hosts6()
	k := f.keyOf(r)
	old, _, _ := f.options(k)
	if err := h.prepare(k, old, Options{Hosts: n}); err != nil {
		return err
	}
	if err := f.rules.Put(k, Options{Hosts: n}.Value(r.Bits())); err != nil {
		return err
	}
	return h.cleanup(k, old, Options{Hosts: n})
}
