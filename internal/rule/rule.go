// Package rule parses traffic_meter rules: an IPv4 or IPv6 address or
// network in CIDR notation, strictly.
//
// A bare address is a host rule (/32 or /128). A network must be written in
// canonical form, with every host bit zero: "10.0.0.0/24" is a rule,
// "10.0.0.1/24" is refused, naming the form that was probably meant. IPv6
// zones ("fe80::1%eth0") are refused, since a rule is not tied to a link.
// IPv4-mapped IPv6 addresses ("::ffff:10.0.0.1") are refused too, naming
// the IPv4 form: IPv4 packets are counted against IPv4 rules, and an
// IPv4-mapped rule would silently never match them.
package rule

import (
	"fmt"
	"net/netip"
	"strings"
)

// Parse parses s as an address or a network and returns its rule.
func Parse(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("empty address: give an IPv4 or IPv6 address or CIDR, such as 10.0.0.0/24 or 2001:db8::/32")
	}
	addrPart, bitsPart, isCIDR := strings.Cut(s, "/")
	addr, err := netip.ParseAddr(addrPart)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid address %q: give an IPv4 or IPv6 address or CIDR, such as 10.0.0.0/24 or 2001:db8::/32", s)
	}
	if addr.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("address %q has an IPv6 zone: rules are not tied to a link, leave out %q", s, "%"+addr.Zone())
	}
	if addr.Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 address: IPv4 traffic is counted by IPv4 rules, write %s", s, unmapped(addr, bitsPart, isCIDR))
	}
	if !isCIDR {
		return netip.PrefixFrom(addr, addr.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid prefix length in %q: it must be a decimal number from 0 to %d", s, addr.BitLen())
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set: write the network address, %s", s, m)
	}
	return p, nil
}

// unmapped gives the IPv4 form of an IPv4-mapped address or network, for
// the error message.
func unmapped(addr netip.Addr, bits string, isCIDR bool) string {
	v4 := addr.Unmap()
	if !isCIDR {
		return v4.String()
	}
	p, err := netip.ParsePrefix(addr.String() + "/" + bits)
	if err != nil || p.Bits() < 96 {
		return v4.String() + "/N"
	}
	return netip.PrefixFrom(v4, p.Bits()-96).Masked().String()
}
