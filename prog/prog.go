// Package prog assembles traffic_meter's programs at run time with
// cilium/ebpf/asm, no compiler, no object file: an XDP program that counts
// the frames an interface receives and a TC program that counts the frames
// it sends, both from one parse-and-count body.
//
// For every frame the program parses Ethernet (skipping up to two
// 802.1Q/802.1AD tags), and for IPv4 and IPv6 looks the source and the
// destination address up, independently, in the family's LPM rule trie. On a
// match it reads the rule's prefix length from the trie value, masks the
// address down to the rule's network address, finds the rule's per-CPU
// stats entry and adds the frame to it in place: a source match is the
// rule's out traffic, a destination match its in traffic. Frames it does not
// understand, truncated or malformed ones included, are not counted. It never
// changes a frame and always passes it on.
//
// The parse-and-count body is emitted against a Hook, which says where the
// packet pointers live in the program's context, how the bytes and packets
// to count are found and what verdict to return, so the same body serves
// XDP (struct xdp_md) and TC (struct __sk_buff).
package prog

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/kernel"
	"github.com/traffic-meter/traffic_meter/maps"
)

// Name is the program's name in the kernel, as bpftool and ip-link show it.
const Name = "traffic_meter"

// Registers that live across helper calls.
const (
	rCtx     = asm.R6 // the program's context
	rLen     = asm.R7 // the bytes to count, once a rule has matched
	rPackets = asm.R8 // the packets to count, once a rule has matched
)

// Verdicts.
const (
	// XDPPass is XDP_PASS: the frame goes on up the stack.
	XDPPass = 2
	// TCNext is TC_ACT_UNSPEC for a cls_bpf filter and TCX_NEXT for TCX
	// (both -1): the frame goes on to the next program or filter, and
	// then on its way.
	TCNext = -1
)

// Offsets of the fields the program reads in its contexts: struct xdp_md
// for XDP, struct __sk_buff for TC.
const (
	xdpData    = 0  // xdp_md.data
	xdpDataEnd = 4  // xdp_md.data_end
	skbLen     = 0  // __sk_buff.len
	skbVLAN    = 20 // __sk_buff.vlan_present
	skbData    = 76 // __sk_buff.data
	skbDataEnd = 80 // __sk_buff.data_end
	// skbWireLen is __sk_buff.wire_len (Linux 5.0): on egress, the bytes
	// of every segment a GSO packet becomes, each with its own headers.
	skbWireLen = 160
	// skbGSOSegs is __sk_buff.gso_segs (Linux 5.1): the number of segments
	// a GSO packet becomes, 0 or 1 for any other.
	skbGSOSegs = 164
)

// Hook describes the attach point the body is emitted for.
type Hook struct {
	// Type and AttachType are the program's type and expected attach
	// type.
	Type       ebpf.ProgramType
	AttachType ebpf.AttachType
	// DataOff and DataEndOff are the offsets of the packet start and end
	// pointers in the context.
	DataOff, DataEndOff int16
	// Measure emits instructions that leave the bytes to count in R7 and
	// the packets in R8. The context is in R6; R1-R5 may be clobbered.
	// Labels it defines start with prefix.
	Measure func(prefix string) asm.Instructions
	// Verdict is the return code: the frame always goes on.
	Verdict int32
	// Frags says whether the program is loaded as aware of multi-buffer
	// frames (BPF_F_XDP_HAS_FRAGS).
	Frags bool
}

// XDPMultiBuffer is the XDP hook that counts the whole frame, every fragment
// of a multi-buffer frame included, with bpf_xdp_get_buff_len (Linux 5.18).
var XDPMultiBuffer = Hook{
	Type: ebpf.XDP, AttachType: ebpf.AttachXDP,
	DataOff: xdpData, DataEndOff: xdpDataEnd, Verdict: XDPPass, Frags: true,
	Measure: func(string) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, rCtx),
			asm.FnXdpGetBuffLen.Call(),
			asm.Mov.Reg(rLen, asm.R0),
			asm.Mov.Imm(rPackets, 1),
		}
	},
}

// XDPLinear is the XDP hook for kernels without bpf_xdp_get_buff_len: the
// frame length is that of its linear part, data_end - data.
var XDPLinear = Hook{
	Type: ebpf.XDP, AttachType: ebpf.AttachXDP,
	DataOff: xdpData, DataEndOff: xdpDataEnd, Verdict: XDPPass,
	Measure: func(string) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(rLen, rCtx, xdpDataEnd, asm.Word),
			asm.LoadMem(asm.R1, rCtx, xdpData, asm.Word),
			asm.Sub.Reg(rLen, asm.R1),
			asm.Mov.Imm(rPackets, 1),
		}
	},
}

// XDPHook returns the best XDP hook a kernel with features f supports:
// the multi-buffer hook, else its fallback, the linear one.
func XDPHook(f kernel.Features) Hook {
	if f.MultiBuffer {
		return XDPMultiBuffer
	}
	return XDPLinear
}

// TCEgress is the TC hook that counts what goes on the wire: a GSO/TSO
// packet counts as the max(gso_segs, 1) segments it becomes, with wire_len
// bytes, and a VLAN tag the skb carries out of band (to be inserted by the
// driver, the hardware or validate_xmit_vlan after the hook) adds its 4
// bytes to every segment.
var TCEgress = Hook{
	Type: ebpf.SchedCLS, DataOff: skbData, DataEndOff: skbDataEnd, Verdict: TCNext,
	Measure: func(prefix string) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(rLen, rCtx, skbWireLen, asm.Word),
			asm.LoadMem(rPackets, rCtx, skbGSOSegs, asm.Word),
			asm.JNE.Imm(rPackets, 0, prefix+"_segs"),
			asm.Mov.Imm(rPackets, 1),
			// vlan_present reads as 0 or 1: add a tag to every segment.
			asm.LoadMem(asm.R1, rCtx, skbVLAN, asm.Word).WithSymbol(prefix + "_segs"),
			asm.Mul.Reg(asm.R1, rPackets),
			asm.Mul.Imm(asm.R1, vlanTag),
			asm.Add.Reg(rLen, asm.R1),
		}
	},
}

// TCHook returns the best TC hook for a kernel with features f.
func TCHook(f kernel.Features) Hook {
	if f.WireLen && f.GSOSegs {
		return TCEgress
	}
	return TCLen
}

// TCLen is the TC hook for kernels without __sk_buff.wire_len and gso_segs
// (before Linux 5.1): every skb counts as one packet of skb->len bytes, so
// a GSO packet counts as one, without the headers of its other segments.
var TCLen = Hook{
	Type: ebpf.SchedCLS, DataOff: skbData, DataEndOff: skbDataEnd, Verdict: TCNext,
	Measure: func(string) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(rLen, rCtx, skbLen, asm.Word),
			asm.Mov.Imm(rPackets, 1),
		}
	},
}

// Spec returns the program spec for a hook. Its map loads refer to the maps
// by name (package maps), to be resolved when the program is loaded.
func Spec(h Hook) *ebpf.ProgramSpec {
	var flags uint32
	if h.Frags {
		flags = unix.BPF_F_XDP_HAS_FRAGS
	}
	return &ebpf.ProgramSpec{
		Name:         Name,
		Type:         h.Type,
		AttachType:   h.AttachType,
		Instructions: Instructions(h),
		License:      "GPL",
		Flags:        flags,
	}
}

// Load loads the program for a hook over a set of maps.
func Load(h Hook, set *maps.Set) (*ebpf.Program, error) {
	p, err := set.LoadProgram(&ebpf.CollectionSpec{
		Maps:     maps.Spec(maps.DefaultMaxRules),
		Programs: map[string]*ebpf.ProgramSpec{Name: Spec(h)},
	}, Name)
	if err != nil {
		return nil, fmt.Errorf("load the %s program: %w", h.Type, err)
	}
	return p, nil
}

// family is what the body needs to know of an address family.
type family struct {
	name         string
	rules, stats string // map names
	minHeader    int16  // bytes of IP header needed to read both addresses
	src, dst     int16  // address offsets in the IP header
	words        int    // address length in words
	size         asm.Size
	srcKey       int16 // stack offset of the source key
	dstKey       int16 // stack offset of the destination key
}

// The keys on the stack are {u32 prefixlen; addr}: the address follows the
// prefix length, at an offset aligned to the word size, as the verifier
// wants stack accesses to be.
var (
	ipv4 = family{name: "ip4", rules: maps.RulesV4Name, stats: maps.StatsV4Name,
		minHeader: 20, src: 12, dst: 16, words: 1, size: asm.Word, srcKey: -16, dstKey: -8}
	ipv6 = family{name: "ip6", rules: maps.RulesV6Name, stats: maps.StatsV6Name,
		minHeader: 40, src: 8, dst: 24, words: 2, size: asm.DWord, srcKey: -52, dstKey: -28}
)

func (f family) bits() int32     { return int32(f.words * f.size.Sizeof() * 8) }
func (f family) wordBits() int32 { return int32(f.size.Sizeof() * 8) }

// Ethernet framing.
const (
	ethHeader = 14 // destination, source, ethertype
	ethType   = 12 // offset of the ethertype
	vlanTag   = 4  // a VLAN tag: TCI and the next ethertype
)

// wire converts a 16-bit value in network byte order to what a load from
// the packet gives on this host.
func wire(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

// Ethertypes as loaded from the packet.
var (
	ethIPv4   = wire(unix.ETH_P_IP)
	ethIPv6   = wire(unix.ETH_P_IPV6)
	eth8021Q  = wire(unix.ETH_P_8021Q)
	eth8021AD = wire(unix.ETH_P_8021AD)
)

// Instructions returns the whole program for a hook.
//
// Registers: R6 holds the context throughout, R7 and R8 the bytes and
// packets to count once known. While parsing, R2 points at the frame (moved forward past each VLAN
// tag, so the IP header is always at R2+14), R3 at its end and R4/R5 are
// scratch. Map lookups use R1-R5 and return in R0, as helper calls do.
func Instructions(h Hook) asm.Instructions {
	insns := asm.Instructions{
		// Keep the context; load the packet bounds.
		asm.Mov.Reg(rCtx, asm.R1),
		asm.LoadMem(asm.R2, asm.R1, h.DataOff, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, h.DataEndOff, asm.Word),

		// No IP frame is shorter than Ethernet + IPv4 header: one bounds
		// check covers the ethertype and two VLAN tags.
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, int32(ethHeader+ipv4.minHeader)),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),

		// Dispatch on the ethertype; untagged IPv4 is the first test.
		asm.LoadMem(asm.R4, asm.R2, ethType, asm.Half),
		asm.JEq.Imm(asm.R4, ethIPv4, "ip4_checked"),
		asm.JEq.Imm(asm.R4, ethIPv6, "ip6"),
	}
	// Up to two VLAN tags (802.1Q or 802.1AD): step R2 past each tag and
	// dispatch on the ethertype that follows it.
	for i, tag := range []string{"vlan1", "vlan2"} {
		insns = append(insns,
			asm.JEq.Imm(asm.R4, eth8021Q, tag),
			asm.JNE.Imm(asm.R4, eth8021AD, "pass"),
			asm.LoadMem(asm.R4, asm.R2, ethType+vlanTag, asm.Half).WithSymbol(tag),
			asm.Add.Imm(asm.R2, vlanTag),
			asm.JEq.Imm(asm.R4, ethIPv4, "ip4"),
			asm.JEq.Imm(asm.R4, ethIPv6, "ip6"),
		)
		if i == 1 {
			insns = append(insns, asm.Ja.Label("pass"))
		}
	}
	insns = append(insns, ip4Header()...)
	insns = append(insns, body(h, ipv4)...)
	insns = append(insns, ip6Header()...)
	insns = append(insns, body(h, ipv6)...)
	return append(insns,
		// Every frame goes on.
		asm.Mov.Imm(asm.R0, h.Verdict).WithSymbol("pass"),
		asm.Return(),
	)
}

// ip4Header checks an IPv4 header at R2+14 and falls through to the IPv4
// body when it is well-formed and whole.
func ip4Header() asm.Instructions {
	return asm.Instructions{
		// After a VLAN tag the fixed header must be re-checked.
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("ip4"),
		asm.Add.Imm(asm.R4, int32(ethHeader+ipv4.minHeader)),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),

		// Version 4 with a 20-byte header is the common case.
		asm.LoadMem(asm.R4, asm.R2, ethHeader, asm.Byte).WithSymbol("ip4_checked"),
		asm.JEq.Imm(asm.R4, 0x45, "ip4_keys"),

		// Otherwise: version 4, header length at least 5 words, and the
		// frame must hold the whole header with its options.
		asm.Mov.Reg(asm.R5, asm.R4),
		asm.And.Imm(asm.R5, 0xf0),
		asm.JNE.Imm(asm.R5, 0x40, "pass"),
		asm.And.Imm(asm.R4, 0x0f),
		asm.JLT.Imm(asm.R4, 5, "pass"),
		asm.LSh.Imm(asm.R4, 2),
		asm.Add.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, ethHeader),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.Ja.Label("ip4_keys"),
	}
}

// ip6Header checks an IPv6 header at R2+14 and falls through to the IPv6
// body when it is whole and says version 6. Extension headers follow the
// addresses and do not matter.
func ip6Header() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("ip6"),
		asm.Add.Imm(asm.R4, int32(ethHeader+ipv6.minHeader)),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R4, asm.R2, ethHeader, asm.Byte),
		asm.And.Imm(asm.R4, 0xf0),
		asm.JNE.Imm(asm.R4, 0x60, "pass"),
	}
}

// body copies the family's source and destination addresses from the IP
// header at R2+14 into their lookup keys on the stack, then counts each.
//
// The bytes and packets are measured only once a rule matched, and at most
// once: the destination part is emitted twice, for when the source part
// measured them and for when it did not.
func body(h Hook, f family) asm.Instructions {
	insns := asm.Instructions{}
	for _, k := range []struct{ key, addr int16 }{{f.srcKey, f.src}, {f.dstKey, f.dst}} {
		// Key: {prefixlen = full length, address}, a host route to look up.
		insns = append(insns, asm.StoreImm(asm.RFP, k.key, int64(f.bits()), asm.Word))
		for w := range int16(f.words) {
			off := w * int16(f.size.Sizeof())
			insns = append(insns,
				asm.LoadMem(asm.R4, asm.R2, ethHeader+k.addr+off, f.size),
				asm.StoreMem(asm.RFP, k.key+4+off, asm.R4, f.size),
			)
		}
	}
	insns[0] = insns[0].WithSymbol(f.name + "_keys")

	src, dstKnown, dstUnknown := f.name+"_src", f.name+"_dst_len", f.name+"_dst"
	insns = append(insns, count(h, f, src, f.srcKey, maps.OutPacketsOff, false, dstUnknown, dstKnown)...)
	insns = append(insns, count(h, f, dstKnown, f.dstKey, maps.InPacketsOff, true, "pass", "pass")...)
	insns = append(insns, count(h, f, dstUnknown, f.dstKey, maps.InPacketsOff, false, "pass", "pass")...)
	return insns
}

// count emits the counting of one address: look the key at fp+key up in
// the rule trie, mask it to the matched rule, and add the frame to the
// counters at valueOff of the rule's stats entry. It continues at noMatch
// when no rule matched and at done otherwise.
func count(h Hook, f family, label string, key int16, valueOff int16, lenKnown bool, noMatch, done string) asm.Instructions {
	insns := asm.Instructions{
		// R0 = rules[key]: the longest matching rule's prefix length.
		asm.LoadMapPtr(asm.R1, 0).WithReference(f.rules).WithSymbol(label),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, noMatch),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
	}
	masking, masked := mask(f, label, key)
	insns = append(insns, masking...)
	if !lenKnown {
		measure := h.Measure(masked)
		measure[0] = measure[0].WithSymbol(masked)
		insns = append(insns, measure...)
		masked = ""
	}
	lookupStats := asm.LoadMapPtr(asm.R1, 0).WithReference(f.stats)
	if masked != "" {
		lookupStats = lookupStats.WithSymbol(masked)
	}
	return append(insns,
		// R0 = stats[rule]; a rule being added or deleted may have none.
		lookupStats,
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, done),

		// Per-CPU entry: plain read-modify-write, no atomics needed.
		asm.LoadMem(asm.R1, asm.R0, valueOff, asm.DWord),
		asm.Add.Reg(asm.R1, rPackets),
		asm.StoreMem(asm.R0, valueOff, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R0, valueOff+8, asm.DWord),
		asm.Add.Reg(asm.R1, rLen),
		asm.StoreMem(asm.R0, valueOff+8, asm.R1, asm.DWord),
		asm.Ja.Label(done),
	)
}

// mask turns the host key at fp+key into the key of the matched rule,
// whose prefix length p is in R1: it keeps the first p bits of the address,
// clears the rest and sets the key's prefix length to p. The address is
// handled a word at a time, at constant offsets: word i keeps all its bits
// when p covers it, none when p ends before it, and otherwise the top
// p - i*wordbits bits, under the mask ^(^0 >> n) in network byte order. A
// host rule (p = full length) needs no work at all.
//
// The instructions end by jumping to the returned label, which the caller
// puts on the instruction that follows.
func mask(f family, label string, key int16) (asm.Instructions, string) {
	wb := f.wordBits()
	word := func(w int32) string { return fmt.Sprintf("%s_word%d", label, w) }
	done := word(int32(f.words))
	var insns asm.Instructions
	for w := range int32(f.words) {
		off := func(w int32) int16 { return key + 4 + int16(w)*int16(f.size.Sizeof()) }
		block := asm.Instructions{
			// Does p cover the whole word?
			asm.JGE.Imm(asm.R1, (w+1)*wb, word(w+1)),
			// R2 = number of prefix bits in this word.
			asm.Mov.Reg(asm.R2, asm.R1),
			asm.Sub.Imm(asm.R2, w*wb),
			// R3 = ^(^0 >> R2) in network byte order.
			asm.Mov.Imm(asm.R3, -1),
			rsh(f.size, asm.R3, asm.R2),
			xorAll(f.size, asm.R3),
			asm.HostTo(asm.BE, asm.R3, f.size),
			// word &= R3
			asm.LoadMem(asm.R4, asm.RFP, off(w), f.size),
			asm.And.Reg(asm.R4, asm.R3),
			asm.StoreMem(asm.RFP, off(w), asm.R4, f.size),
		}
		if w > 0 {
			block[0] = block[0].WithSymbol(word(w))
		}
		// The words after this one are all host bits.
		for z := w + 1; z < int32(f.words); z++ {
			block = append(block, storeZero(off(z), f.size))
		}
		block = append(block, asm.StoreMem(asm.RFP, key, asm.R1, asm.Word))
		if w < int32(f.words)-1 {
			block = append(block, asm.Ja.Label(done))
		}
		insns = append(insns, block...)
	}
	return insns, done
}

// storeZero zeroes an address word on the stack. asm.StoreImm refuses
// DWord, though the kernel takes a 64-bit store of a sign-extended immediate.
func storeZero(off int16, size asm.Size) asm.Instruction {
	return asm.Instruction{OpCode: asm.StoreImmOp(size), Dst: asm.RFP, Offset: off}
}

// rsh shifts dst right by the count in src, in the width of an address word.
func rsh(size asm.Size, dst, src asm.Register) asm.Instruction {
	if size == asm.Word {
		return asm.RSh.Reg32(dst, src)
	}
	return asm.RSh.Reg(dst, src)
}

// xorAll flips every bit of dst within the width of an address word.
func xorAll(size asm.Size, dst asm.Register) asm.Instruction {
	if size == asm.Word {
		return asm.Xor.Imm32(dst, -1)
	}
	return asm.Xor.Imm(dst, -1)
}
