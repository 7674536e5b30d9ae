// Package frame builds Ethernet frames for tests: IPv4 and IPv6 over UDP,
// TCP or ICMP, with VLAN tags, IPv4 options, IPv6 extension headers and
// fragments, and frames of other ethertypes.
package frame

import (
	"encoding/binary"
	"net/netip"
)

// Ethertypes and VLAN tag protocol identifiers.
const (
	IPv4   = 0x0800
	IPv6   = 0x86dd
	ARP    = 0x0806
	Q8021  = 0x8100
	AD8021 = 0x88a8
)

// IP protocol numbers.
const (
	ICMP   = 1
	TCP    = 6
	UDP    = 17
	ICMPv6 = 58
)

// Frame describes an IP frame.
type Frame struct {
	// Src and Dst are the IP addresses; their family picks IPv4 or IPv6.
	Src, Dst netip.Addr
	// Proto is the transport protocol (UDP when zero).
	Proto uint8
	// Payload is the number of transport payload bytes.
	Payload int
	// VLANs are the TPIDs of the VLAN tags, outermost first.
	VLANs []uint16
	// Options is the number of IPv4 option bytes (a multiple of 4, up to 40).
	Options int
	// ExtHeaders is the number of 8-byte IPv6 destination-options headers
	// put before the transport header.
	ExtHeaders int
	// Fragment makes the frame a non-first fragment: IPv4 with a fragment
	// offset, IPv6 with a fragment header.
	Fragment bool
}

// Bytes builds the frame.
func (f Frame) Bytes() []byte {
	proto := f.Proto
	if proto == 0 {
		proto = UDP
	}
	var l4 []byte
	switch proto {
	case TCP:
		l4 = make([]byte, 20+f.Payload)
		binary.BigEndian.PutUint16(l4[0:], 40000)
		binary.BigEndian.PutUint16(l4[2:], 80)
		l4[12] = 5 << 4
		l4[13] = 0x10 // ACK
	case UDP:
		l4 = make([]byte, 8+f.Payload)
		binary.BigEndian.PutUint16(l4[0:], 40000)
		binary.BigEndian.PutUint16(l4[2:], 9)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	default:
		l4 = make([]byte, 8+f.Payload)
		l4[0] = 8 // echo request
	}
	for i := range f.Payload {
		l4[len(l4)-f.Payload+i] = byte(i)
	}
	if f.Src.Is4() {
		return Ether(IPv4, f.ipv4(proto, l4), f.VLANs...)
	}
	return Ether(IPv6, f.ipv6(proto, l4), f.VLANs...)
}

func (f Frame) ipv4(proto uint8, l4 []byte) []byte {
	hlen := 20 + f.Options
	ip := make([]byte, hlen, hlen+len(l4))
	ip[0] = 0x40 | byte(hlen/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(hlen+len(l4)))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	if f.Fragment {
		binary.BigEndian.PutUint16(ip[6:], 185) // offset 1480 bytes
	}
	ip[8] = 64
	ip[9] = proto
	src, dst := f.Src.As4(), f.Dst.As4()
	copy(ip[12:], src[:])
	copy(ip[16:], dst[:])
	for i := 20; i < hlen; i++ {
		ip[i] = 1 // NOP options
	}
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return append(ip, l4...)
}

func (f Frame) ipv6(proto uint8, l4 []byte) []byte {
	ip := make([]byte, 40)
	ip[0] = 0x60
	ip[7] = 64
	src, dst := f.Src.As16(), f.Dst.As16()
	copy(ip[8:], src[:])
	copy(ip[24:], dst[:])
	next := &ip[6]
	for range f.ExtHeaders {
		*next = 60 // destination options
		ext := make([]byte, 8)
		ext[2], ext[3] = 1, 4 // PadN over the remaining bytes
		ip = append(ip, ext...)
		next = &ip[len(ip)-8]
	}
	if f.Fragment {
		*next = 44
		ext := make([]byte, 8)
		binary.BigEndian.PutUint16(ext[2:], 1480) // offset 1480 bytes
		ip = append(ip, ext...)
		next = &ip[len(ip)-8]
	}
	*next = proto
	ip = append(ip, l4...)
	binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-40))
	return ip
}

// Ether wraps a payload in an Ethernet header of the given ethertype, with
// VLAN tags of the given TPIDs (outermost first).
func Ether(ethertype uint16, payload []byte, vlans ...uint16) []byte {
	b := []byte{0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1}
	for i, tpid := range vlans {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, uint16(100+i))
	}
	b = binary.BigEndian.AppendUint16(b, ethertype)
	return append(b, payload...)
}

// ARPRequest is an ARP request frame (42 bytes).
func ARPRequest() []byte {
	arp := []byte{0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2}
	return Ether(ARP, arp)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
