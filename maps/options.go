package maps

import (
	"fmt"
	"strings"
)

// Options are a rule's options: the breakdowns of its counts that it
// keeps beside its total (SPEC "Breakdowns of a rule"). The zero Options
// is a rule without any, which costs nothing more per packet than a rule
// did before options existed.
//
// They live in the rule trie's value, beside the rule's prefix length,
// so that the program learns them with the match it makes anyway (see
// Options.Value): bits 0-7 the prefix length, bit 8 ByInterface, bits
// 9-31 Hosts.
type Options struct {
	// ByInterface counts the rule per attachment too (interface, network
	// namespace, direction and hook).
	ByInterface bool
	// Hosts, when not 0, counts each address of the rule that a counted
	// frame carries, up to Hosts addresses (the rule's host capacity);
	// the others count in the rule's remainder.
	Hosts uint32
}

// Bits of a rule trie value.
const (
	// PrefixMask masks the rule's prefix length.
	PrefixMask = 0xff
	// ByInterfaceBit is set for a rule with Options.ByInterface.
	ByInterfaceBit = 1 << 8
	// HostsShift is where Options.Hosts starts.
	HostsShift = 9
	// MaxHosts is the largest host capacity of a rule.
	MaxHosts = 1<<(32-HostsShift) - 1
)

// Value returns the rule trie value of a rule of prefix length bits with
// these options.
func (o Options) Value(bits int) uint32 {
	v := uint32(bits) | o.Hosts<<HostsShift
	if o.ByInterface {
		v |= ByInterfaceBit
	}
	return v
}

// OptionsOf returns the options a rule trie value holds.
func OptionsOf(v uint32) Options {
	return Options{ByInterface: v&ByInterfaceBit != 0, Hosts: v >> HostsShift}
}

// Check reports whether the options can be set.
func (o Options) Check() error {
	if o.Hosts > MaxHosts {
		return fmt.Errorf("a rule holds at most %d hosts, not %d", MaxHosts, o.Hosts)
	}
	return nil
}

// String lists the options as the command line sets them, such as
// "by-interface, hosts 1000", or "" for none.
func (o Options) String() string {
	var s []string
	if o.ByInterface {
		s = append(s, "by-interface")
	}
	if o.Hosts > 0 {
		s = append(s, fmt.Sprintf("hosts %d", o.Hosts))
	}
	return strings.Join(s, ", ")
}

// AppendJSON appends the options as a JSON object, such as
// {"by_interface":true,"hosts":1000}, to b.
func (o Options) AppendJSON(b []byte) []byte {
	return fmt.Appendf(b, `{"by_interface":%t,"hosts":%d}`, o.ByInterface, o.Hosts)
}

// prepareOptions makes what a rule of key k needs before its trie value
// changes from options old to new: the breakdown tables' entries that
// must exist before the program looks for them. Each breakdown adds its
// step here.
func (f family[K]) prepareOptions(k K, old, new Options) error {
	if new.ByInterface && !old.ByInterface {
		// Rows a killed change left under the key (interfaces.go).
		if err := f.deleteRows(k); err != nil {
			return err
		}
	}
	return f.hosts.prepare(k, old, new)
}

// cleanupOptions removes what a rule of key k no longer needs after its
// trie value changed from options old to new (new is the zero Options
// when the rule was deleted). Each breakdown adds its step here.
func (f family[K]) cleanupOptions(k K, old, new Options) error {
	if old.ByInterface && !new.ByInterface {
		// Its rows go; what they counted stays in the total.
		if err := f.deleteRows(k); err != nil {
			return err
		}
	}
	return f.hosts.cleanup(k, old, new)
}
