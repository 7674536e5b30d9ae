// Package prog assembles traffic_meter's programs at run time with
// cilium/ebpf/asm, no compiler, no object file: an XDP program and a TC
// ingress program that count the frames an interface receives, and a TC
// egress program that counts the frames it sends, all from one
// parse-and-count body.
//
// For every frame the program parses Ethernet (skipping up to two
// 802.1Q/802.1AD tags), and for IPv4 and IPv6 looks the source and the
// destination address up, independently, in the family's LPM rule trie,
// through the family's per-CPU address cache (see cache). On a
// match it has the rule's prefix length, masks the
// address down to the rule's network address, finds the rule's per-CPU
// stats entry and adds the frame to it in place: a source match is the
// rule's out traffic, a destination match its in traffic. Frames it does not
// understand, truncated or malformed ones included, are not counted. It never
// changes a frame and always passes it on.
//
// The parse-and-count body is emitted against a Hook, which says where the
// packet pointers live in the program's context, how the bytes and packets
// to count are found and what verdict to return, so the same body serves
// XDP (struct xdp_md) and TC (struct __sk_buff). The listing of each hook's
// program is in testdata/<hook>.golden, which TestListing checks without
// root.
package prog

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/uapi"
	"github.com/traffic-meter/traffic_meter/maps"
)

// Name is the program's name in the kernel, as bpftool and ip-link show it.
const Name = "traffic_meter"

// Registers that live across helper calls.
const (
	rCtx     = asm.R6 // the program's context
	rLen     = asm.R7 // the bytes to count, once a rule has matched
	rPackets = asm.R8 // the packets to count, once a rule has matched
	rGen     = asm.R9 // the generation of the rules, read once per frame (see cache)
)

// Hook describes the attach point the body is emitted for.
type Hook struct {
	// Name names the hook in test logs and listings (testdata/Name.golden).
	Name string
	// Type and AttachType are the program's type and expected attach
	// type.
	Type       ebpf.ProgramType
	AttachType ebpf.AttachType
	// DataOff and DataEndOff are the offsets of the packet start and end
	// pointers in the context.
	DataOff, DataEndOff int16
	// Measure emits instructions that leave the bytes to count in R7 and
	// the packets in R8, the first of them labelled label; labels of its
	// own start with label. The context is in R6 and R9 is kept;
	// R1-R5 may be clobbered.
	Measure func(label string) asm.Instructions
	// Verdict is the return code: the frame always goes on
	// (uapi.PassVerdict of Type).
	Verdict int32
	// Frags says whether the program is loaded as aware of multi-buffer
	// frames (BPF_F_XDP_HAS_FRAGS).
	Frags bool
	// Needs is the kernel feature the hook needs, nil for none, and
	// Fallback the hook to use instead on a kernel without it.
	Needs    *kernel.Feature
	Fallback *Hook
	// Attachment is the number of the attachment the program is loaded
	// for (maps.NextAttachment), under which it counts the rows of the
	// rules with the option by-interface (countInterface); 0 in the
	// listings.
	Attachment uint32
}

// On returns h if a kernel with features f has what h needs, else its
// fallback.
func (h Hook) On(f kernel.Features) Hook {
	if h.Needs == nil || h.Needs.Has(f) {
		return h
	}
	return *h.Fallback
}

// XDPMultiBuffer is the XDP hook that counts the whole frame, every fragment
// of a multi-buffer frame included, with bpf_xdp_get_buff_len (Linux 5.18).
var XDPMultiBuffer = Hook{
	Name: "xdp", Type: ebpf.XDP, AttachType: ebpf.AttachXDP,
	DataOff: uapi.XDPMDData, DataEndOff: uapi.XDPMDDataEnd, Verdict: uapi.XDPPass, Frags: true,
	Needs: kernel.MultiBuffer, Fallback: &XDPLinear,
	Measure: func(label string) asm.Instructions {
		return asm.Instructions{
			// len = bpf_xdp_get_buff_len(ctx); packets = 1;
			asm.Mov.Reg(asm.R1, rCtx).WithSymbol(label),
			asm.FnXdpGetBuffLen.Call(),
			asm.Mov.Reg(rLen, asm.R0),
			asm.Mov.Imm(rPackets, 1),
		}
	},
}

// XDPLinear is the XDP hook for kernels without bpf_xdp_get_buff_len: the
// frame length is that of its linear part, data_end - data.
var XDPLinear = Hook{
	Name: "xdp-linear", Type: ebpf.XDP, AttachType: ebpf.AttachXDP,
	DataOff: uapi.XDPMDData, DataEndOff: uapi.XDPMDDataEnd, Verdict: uapi.XDPPass,
	Measure: func(label string) asm.Instructions {
		return asm.Instructions{
			// len = ctx->data_end - ctx->data; packets = 1;
			asm.LoadMem(rLen, rCtx, uapi.XDPMDDataEnd, asm.Word).WithSymbol(label),
			asm.LoadMem(asm.R1, rCtx, uapi.XDPMDData, asm.Word),
			asm.Sub.Reg(rLen, asm.R1),
			asm.Mov.Imm(rPackets, 1),
		}
	},
}

// XDPHook returns the best XDP hook a kernel with features f supports:
// the multi-buffer hook, else its fallback, the linear one.
func XDPHook(f kernel.Features) Hook { return XDPMultiBuffer.On(f) }

// TCEgress is the TC hook that counts what goes on the wire: a GSO/TSO
// packet counts as the max(gso_segs, 1) segments it becomes, with wire_len
// bytes, and a VLAN tag the skb carries out of band (to be inserted by the
// driver, the hardware or validate_xmit_vlan after the hook) adds its 4
// bytes to every segment.
var TCEgress = Hook{
	Name: "tc", Type: ebpf.SchedCLS, DataOff: uapi.SkbData, DataEndOff: uapi.SkbDataEnd, Verdict: uapi.TCActUnspec,
	Needs: kernel.SkbWireLen, Fallback: &TCLen,
	Measure: func(label string) asm.Instructions {
		segs := label + "_segs"
		return asm.Instructions{
			// len = skb->wire_len;
			asm.LoadMem(rLen, rCtx, uapi.SkbWireLen, asm.Word).WithSymbol(label),
			// packets = skb->gso_segs; if (packets == 0) packets = 1;
			asm.LoadMem(rPackets, rCtx, uapi.SkbGSOSegs, asm.Word),
			asm.JNE.Imm(rPackets, 0, segs),
			asm.Mov.Imm(rPackets, 1),
			// len += skb->vlan_present * packets * 4; (vlan_present is 0 or 1)
			asm.LoadMem(asm.R1, rCtx, uapi.SkbVLANPresent, asm.Word).WithSymbol(segs),
			asm.Mul.Reg(asm.R1, rPackets),
			asm.Mul.Imm(asm.R1, vlanTag),
			asm.Add.Reg(rLen, asm.R1),
		}
	},
}

// TCLen is the TC hook for kernels without __sk_buff.wire_len and gso_segs
// (before Linux 5.1): every skb counts as one packet of skb->len bytes, so
// a GSO packet counts as one, without the headers of its other segments.
var TCLen = Hook{
	Name: "tc-len", Type: ebpf.SchedCLS, DataOff: uapi.SkbData, DataEndOff: uapi.SkbDataEnd, Verdict: uapi.TCActUnspec,
	Measure: func(label string) asm.Instructions {
		return asm.Instructions{
			// len = skb->len; packets = 1;
			asm.LoadMem(rLen, rCtx, uapi.SkbLen, asm.Word).WithSymbol(label),
			asm.Mov.Imm(rPackets, 1),
		}
	},
}

// TCIngress is the TC hook for what an interface receives, behind GRO: a
// GRO aggregate counts as the max(gso_segs, 1) segments it was built from,
// each with its own headers, and a VLAN tag held out of band adds its 4
// bytes to every segment.
//
// __sk_buff.wire_len is not the wire length at ingress: the kernel computes
// it (qdisc_pkt_len_init, which adds the headers of every GSO segment) only
// on transmit, in __dev_queue_xmit; at ingress, sch_handle_ingress (net/core/dev.c)
// sets qdisc_skb_cb(skb)->pkt_len = skb->len before cls_bpf or tcx push the
// MAC header back, so it is the aggregate's length without its MAC header.
// This hook counts instead, for an aggregate of n = gso_segs segments,
//
//	skb->len + (n-1)*hdrlen + vlan_present*4*n
//
// where skb->len is what the program sees (MAC header pushed: the first
// segment's headers and every segment's payload) and hdrlen the headers of
// one segment: Ethernet with its in-data VLAN tags, IPv4 with options (GRO
// never merges IPv4 with options, inet_gro_receive, but an aggregate built
// elsewhere may carry them) or IPv6 with the extension headers GRO pulls
// (hop-by-hop, routing, destination options: up to ingressExtHeaders of
// them), and TCP with options or UDP. The headers are read with
// bpf_skb_load_bytes only when n > 1, so a plain frame pays nothing more;
// an aggregate whose headers cannot be read counts its n packets with
// skb->len bytes.
var TCIngress = Hook{
	Name: "tc-ingress", Type: ebpf.SchedCLS, DataOff: uapi.SkbData, DataEndOff: uapi.SkbDataEnd, Verdict: uapi.TCActUnspec,
	Needs: kernel.SkbWireLen, Fallback: &TCLen,
	Measure: measureIngress,
}

// Registers and stack of the ingress measure (TCIngress): R9 is the
// offset of the header being read, from the start of the frame, while the
// generation it holds for the body (see cache) waits in a stack slot; the
// headers are read into a scratch area. Both are below the keys and the
// cache's slots (fp-72 and up).
const (
	rHdr              = asm.R9
	scratch           = -88 // fp-88..fp-79
	savedGen          = -96 // fp-96..fp-89
	ingressExtHeaders = 4   // the IPv6 extension headers an aggregate's hdrlen includes
)

// measureIngress is TCIngress's Measure.
func measureIngress(label string) asm.Instructions {
	l := func(s string) string { return label + "_" + s }
	// load emits scratch[0:n] = frame[R9+off : R9+off+n], going to
	// l("gen") when the skb is shorter.
	load := func(off, n int32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, rCtx),
			asm.Mov.Reg(asm.R2, rHdr),
			asm.Add.Imm(asm.R2, off),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, scratch),
			asm.Mov.Imm(asm.R4, n),
			asm.FnSkbLoadBytes.Call(),
			asm.JNE.Imm(asm.R0, 0, l("gen")),
		}
	}
	insns := asm.Instructions{
		// len = skb->len;
		asm.LoadMem(rLen, rCtx, uapi.SkbLen, asm.Word).WithSymbol(label),
		// packets = skb->gso_segs; if (packets > 1) goto gro;
		asm.LoadMem(rPackets, rCtx, uapi.SkbGSOSegs, asm.Word),
		asm.JGT.Imm(rPackets, 1, l("gro")),
		// packets = 1; goto vlan;
		asm.Mov.Imm(rPackets, 1),
		asm.Ja.Label(l("vlan")),
		// saved = generation; off = 12; (the ethertype)
		asm.StoreMem(asm.RFP, savedGen, rGen, asm.DWord).WithSymbol(l("gro")),
		asm.Mov.Imm(rHdr, ethType),
	}
	// Up to two VLAN tags in the frame: step past each.
	for i := 0; i <= 2; i++ {
		insns = append(insns, load(0, 2)...)
		// type = *(u16 *)scratch;
		insns = append(insns, asm.LoadMem(asm.R1, asm.RFP, scratch, asm.Half))
		if i == 2 {
			break
		}
		tag := fmt.Sprint(l(lVLAN), i)
		insns = append(insns,
			// if (type is not a VLAN tag) goto l3;
			asm.JEq.Imm(asm.R1, eth8021Q, tag),
			asm.JNE.Imm(asm.R1, eth8021AD, l("l3")),
			// off += 4;
			asm.Add.Imm(rHdr, vlanTag).WithSymbol(tag),
		)
	}
	insns = append(insns,
		// off += 2; (the IP header)
		asm.Add.Imm(rHdr, 2).WithSymbol(l("l3")),
		asm.JEq.Imm(asm.R1, ethIPv6, l("ip6")),
		asm.JNE.Imm(asm.R1, ethIPv4, l("gen")),
	)
	// IPv4: off += ihl*4; proto = ip->protocol;
	insns = append(insns, load(0, 10)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, scratch, asm.Byte),
		asm.And.Imm(asm.R1, 0x0f),
		asm.LSh.Imm(asm.R1, 2),
		asm.Add.Reg(rHdr, asm.R1),
		asm.LoadMem(asm.R2, asm.RFP, scratch+9, asm.Byte),
		asm.Ja.Label(l("l4")),
	)
	// IPv6: proto = ip6->nexthdr; off += 40;
	ip6 := load(0, 8)
	ip6[0] = ip6[0].WithSymbol(l("ip6"))
	insns = append(insns, ip6...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.RFP, scratch+6, asm.Byte),
		asm.Add.Imm(rHdr, 40),
	)
	// The extension headers GRO pulls: hop-by-hop (0), routing (43),
	// destination options (60); proto = ext->nexthdr;
	// off += (ext->hdrlen + 1) * 8;
	for i := 0; i < ingressExtHeaders; i++ {
		ext := fmt.Sprint(l("ext"), i)
		insns = append(insns,
			asm.JEq.Imm(asm.R2, 0, ext),
			asm.JEq.Imm(asm.R2, unix.IPPROTO_ROUTING, ext),
			asm.JNE.Imm(asm.R2, unix.IPPROTO_DSTOPTS, l("l4")),
		)
		x := load(0, 2)
		x[0] = x[0].WithSymbol(ext)
		insns = append(insns, x...)
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.RFP, scratch, asm.Byte),
			asm.LoadMem(asm.R1, asm.RFP, scratch+1, asm.Byte),
			asm.Add.Imm(asm.R1, 1),
			asm.LSh.Imm(asm.R1, 3),
			asm.Add.Reg(rHdr, asm.R1),
		)
	}
	insns = append(insns,
		// TCP: off += th->doff*4; UDP: off += 8; else the headers end here.
		asm.JEq.Imm(asm.R2, unix.IPPROTO_UDP, l("udp")).WithSymbol(l("l4")),
		asm.JNE.Imm(asm.R2, unix.IPPROTO_TCP, l("add")),
	)
	insns = append(insns, load(12, 1)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, scratch, asm.Byte),
		asm.RSh.Imm(asm.R1, 4),
		asm.LSh.Imm(asm.R1, 2),
		asm.Add.Reg(rHdr, asm.R1),
		asm.Ja.Label(l("add")),
		asm.Add.Imm(rHdr, 8).WithSymbol(l("udp")),
		// len += (packets - 1) * off;
		asm.Mov.Reg(asm.R1, rPackets).WithSymbol(l("add")),
		asm.Sub.Imm(asm.R1, 1),
		asm.Mul.Reg(asm.R1, rHdr),
		asm.Add.Reg(rLen, asm.R1),
		// generation = saved;
		asm.LoadMem(rGen, asm.RFP, savedGen, asm.DWord).WithSymbol(l("gen")),
		// len += skb->vlan_present * packets * 4; (vlan_present is 0 or 1)
		asm.LoadMem(asm.R1, rCtx, uapi.SkbVLANPresent, asm.Word).WithSymbol(l("vlan")),
		asm.Mul.Reg(asm.R1, rPackets),
		asm.Mul.Imm(asm.R1, vlanTag),
		asm.Add.Reg(rLen, asm.R1),
	)
	return insns
}

// TCHook returns the best TC hook for a kernel with features f: the wire
// hook, else its fallback, the skb->len one.
func TCHook(f kernel.Features) Hook { return TCEgress.On(f) }

// TCIngressHook returns the best TC ingress hook for a kernel with
// features f: the GRO-aware hook, else its fallback, the skb->len one.
func TCIngressHook(f kernel.Features) Hook { return TCIngress.On(f) }

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
	p, err := loadOver(Spec(h), set)
	if err != nil {
		return nil, fmt.Errorf("load the %s program: %w", h.Type, err)
	}
	return p, nil
}

// loadOver loads a program whose map loads refer to the maps by name over
// the maps of set; it need not refer to every map.
func loadOver(spec *ebpf.ProgramSpec, set *maps.Set) (*ebpf.Program, error) {
	for name, m := range set.Replacements() {
		if err := spec.Instructions.AssociateMap(name, m); err != nil && !errors.Is(err, asm.ErrUnreferencedSymbol) {
			return nil, err
		}
	}
	return ebpf.NewProgram(spec)
}

// family is what the body needs to know of an address family.
type family struct {
	name         string // the family's label, and the prefix of its blocks' labels
	rules, stats string // map names
	cache        string // map name of the address cache
	result       int16  // offset of the result in a cache entry
	minHeader    int16  // bytes of IP header needed to read both addresses
	src, dst     int16  // address offsets in the IP header
	words        int    // address length in words
	size         asm.Size
	srcKey       int16 // stack offset of the source key
	dstKey       int16 // stack offset of the destination key
}

// The stack frame, below fp (R10), holds a frame's two lookup keys, each
// {u32 prefixlen; address}. The address follows the prefix length at an
// offset aligned to the word size, as the verifier wants stack accesses to
// be: 8 bytes for IPv6, loaded and stored a DWord at a time. A frame is
// IPv4 or IPv6, so the two families' keys may overlap:
//
//	fp-52  ipv6 src.prefixlen
//	fp-48  ipv6 src.addr[0:8]
//	fp-40  ipv6 src.addr[8:16]
//	fp-32  (unused)
//	fp-28  ipv6 dst.prefixlen
//	fp-24  ipv6 dst.addr[0:8]
//	fp-16  ipv6 dst.addr[8:16]  |  ipv4 src.prefixlen
//	fp-12                       |  ipv4 src.addr
//	fp-8   (unused)             |  ipv4 dst.prefixlen
//	fp-4                        |  ipv4 dst.addr
//
// Below them, the address cache's (see cache): the index of a bucket
// (and the key 0 of the generation map), the pointer to the bucket, kept
// across the trie's lookup, and the mask of bucket indexes, read with the
// generation.
//
//	fp-72  the mask
//	fp-64  the bucket
//	fp-56  the bucket's index
const (
	cacheIndex = -56
	cacheEntry = -64
	cacheMask  = -72
)

// Below those of TCIngress's measure (fp-96 and up), what the breakdowns
// of a rule need (see breakdowns), for the side being counted:
//
//	fp-104         the matched rule's trie value (keep)
//	fp-120..-105   the address before the mask (keep): IPv4 at fp-120
//	fp-152..-121   scratch: the stats value of a new breakdown entry
//	fp-184..-153   scratch: the key of a per-interface row
const (
	ruleValue    = -104
	hostAddr     = -120
	newStats     = -152
	interfaceRow = -184
)

var (
	ipv4 = family{name: "ip4", rules: maps.RulesV4Name, stats: maps.StatsV4Name, cache: maps.CacheV4Name, result: maps.CacheResult4,
		minHeader: 20, src: 12, dst: 16, words: 1, size: asm.Word, srcKey: -16, dstKey: -8}
	ipv6 = family{name: "ip6", rules: maps.RulesV6Name, stats: maps.StatsV6Name, cache: maps.CacheV6Name, result: maps.CacheResult6,
		minHeader: 40, src: 8, dst: 24, words: 2, size: asm.DWord, srcKey: -52, dstKey: -28}
)

func (f family) bits() int32     { return int32(f.words * f.size.Sizeof() * 8) }
func (f family) wordBits() int32 { return int32(f.size.Sizeof() * 8) }

// Labels of the program's blocks. A family's blocks are labelled with the
// family's name (f.name, "ip4" or "ip6": its header, whose bounds are not
// checked yet) followed by a suffix.
const (
	// lPass returns the verdict: every frame ends there.
	lPass = "pass"
	// lVLAN, followed by 1 or 2, reads the ethertype after that VLAN tag.
	lVLAN = "vlan"
	// sChecked: the IPv4 header, its fixed part known to be in the frame.
	sChecked = "_checked"
	// sKeys: copy the addresses into their lookup keys.
	sKeys = "_keys"
	// sSrc: count the source address, measuring the frame on a match.
	sSrc = "_src"
	// sDstMeasured: count the destination address, the frame measured
	// by the source's match.
	sDstMeasured = "_dst_len"
	// sDst: count the destination address, measuring the frame on a
	// match.
	sDst = "_dst"

	// Within a count block: sWord, followed by i, masks word i of the
	// address (i > 0); sMeasure measures the frame (Hook.Measure), and
	// sAdd adds it to the rule's counters.
	sWord    = "_word"
	sMeasure = "_measure"
	sAdd     = "_add"
	// After sAdd, the breakdowns (see breakdowns): sInterface counts the
	// frame per attachment, sHosts per host, sCount the host's row.
	sInterface = "_iface"
	sHosts     = "_hosts"
	sCount     = "_count"
	// Within a count block, the blocks of the cache (see cache): sMask
	// keeps what the breakdowns need (keep) and sPrefix masks the address
	// to the rule found, sWay followed by i compares
	// way i of the bucket (i > 0), sFill looks an address not cached up
	// in the trie, sStore stores the result, sTrie looks the address up
	// in the trie alone.
	sMask   = "_mask"
	sPrefix = "_prefix"
	sWay    = "_way"
	sFill   = "_fill"
	sStore  = "_store"
	sTrie   = "_trie"
)

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

// Instructions returns the whole program for a hook: the Ethernet parse,
// then the IPv4 block (header check and body), the IPv6 block, and the
// verdict. Control passes between blocks only by jumps; within a block,
// the header check falls through into the body. TestListing shows the
// result, testdata/<hook>.golden.
//
// Registers: R6 holds the context throughout, R7 and R8 the bytes and
// packets to count once known, R9 the generation of the rules once the
// addresses are read (see cache). While parsing, R2 points at the frame
// (moved forward past each VLAN tag, so the IP header is always at
// R2+14), R3 at its end and R4/R5 are scratch. Map lookups use R1-R5 and
// return in R0, as helper calls do.
func Instructions(h Hook) asm.Instructions {
	insns := ethernet(h)
	// The IPv4 block: the header check falls through into the body.
	insns = append(insns, ip4Header()...)
	insns = append(insns, body(h, ipv4)...)
	// The IPv6 block: the header check falls through into the body.
	insns = append(insns, ip6Header()...)
	insns = append(insns, body(h, ipv6)...)
	return append(insns,
		// return verdict; (every frame goes on)
		asm.Mov.Imm(asm.R0, h.Verdict).WithSymbol(lPass),
		asm.Return(),
	)
}

// ethernet loads the packet bounds and dispatches on the ethertype,
// stepping past up to two VLAN tags (802.1Q or 802.1AD), to the IPv4 or
// the IPv6 block; any other frame jumps to lPass.
func ethernet(h Hook) asm.Instructions {
	insns := asm.Instructions{
		// Keep the context; load the packet bounds.
		asm.Mov.Reg(rCtx, asm.R1),
		asm.LoadMem(asm.R2, asm.R1, h.DataOff, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, h.DataEndOff, asm.Word),

		// No IP frame is shorter than Ethernet + IPv4 header: one bounds
		// check covers the ethertype and two VLAN tags.
		// if (data + 14 + 20 > data_end) goto pass;
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, int32(ethHeader+ipv4.minHeader)),
		asm.JGT.Reg(asm.R4, asm.R3, lPass),

		// Dispatch on the ethertype; untagged IPv4 is the first test,
		// and its fixed header is within the bounds just checked.
		asm.LoadMem(asm.R4, asm.R2, ethType, asm.Half),
		asm.JEq.Imm(asm.R4, ethIPv4, ipv4.name+sChecked),
		asm.JEq.Imm(asm.R4, ethIPv6, ipv6.name),
	}
	// Up to two VLAN tags: step R2 past each tag and dispatch on the
	// ethertype that follows it.
	for i := 1; i <= 2; i++ {
		tag := fmt.Sprint(lVLAN, i)
		insns = append(insns,
			asm.JEq.Imm(asm.R4, eth8021Q, tag),
			asm.JNE.Imm(asm.R4, eth8021AD, lPass),
			asm.LoadMem(asm.R4, asm.R2, ethType+vlanTag, asm.Half).WithSymbol(tag),
			asm.Add.Imm(asm.R2, vlanTag),
			asm.JEq.Imm(asm.R4, ethIPv4, ipv4.name),
			asm.JEq.Imm(asm.R4, ethIPv6, ipv6.name),
		)
	}
	// A third tag, or any other ethertype after the second.
	return append(insns, asm.Ja.Label(lPass))
}

// ip4Header checks an IPv4 header at R2+14 and falls through to the IPv4
// body when it is well-formed and whole.
func ip4Header() asm.Instructions {
	return asm.Instructions{
		// After a VLAN tag the fixed header must be re-checked.
		// if (data + 14 + 20 > data_end) goto pass;
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol(ipv4.name),
		asm.Add.Imm(asm.R4, int32(ethHeader+ipv4.minHeader)),
		asm.JGT.Reg(asm.R4, asm.R3, lPass),

		// Version 4 with a 20-byte header is the common case.
		// if (ip->version_ihl == 0x45) goto ip4_keys;
		asm.LoadMem(asm.R4, asm.R2, ethHeader, asm.Byte).WithSymbol(ipv4.name + sChecked),
		asm.JEq.Imm(asm.R4, 0x45, ipv4.name+sKeys),

		// Otherwise: version 4, header length at least 5 words, and the
		// frame must hold the whole header with its options.
		// if ((version_ihl & 0xf0) != 0x40) goto pass;
		asm.Mov.Reg(asm.R5, asm.R4),
		asm.And.Imm(asm.R5, 0xf0),
		asm.JNE.Imm(asm.R5, 0x40, lPass),
		// ihl = version_ihl & 0x0f; if (ihl < 5) goto pass;
		asm.And.Imm(asm.R4, 0x0f),
		asm.JLT.Imm(asm.R4, 5, lPass),
		// if (data + 14 + ihl*4 > data_end) goto pass;
		asm.LSh.Imm(asm.R4, 2),
		asm.Add.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, ethHeader),
		asm.JGT.Reg(asm.R4, asm.R3, lPass),
		// goto ip4_keys; (the next instruction)
		asm.Ja.Label(ipv4.name + sKeys),
	}
}

// ip6Header checks an IPv6 header at R2+14 and falls through to the IPv6
// body when it is whole and says version 6. Extension headers follow the
// addresses and do not matter.
func ip6Header() asm.Instructions {
	return asm.Instructions{
		// if (data + 14 + 40 > data_end) goto pass;
		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol(ipv6.name),
		asm.Add.Imm(asm.R4, int32(ethHeader+ipv6.minHeader)),
		asm.JGT.Reg(asm.R4, asm.R3, lPass),
		// if ((ip6->version_class & 0xf0) != 0x60) goto pass;
		asm.LoadMem(asm.R4, asm.R2, ethHeader, asm.Byte),
		asm.And.Imm(asm.R4, 0xf0),
		asm.JNE.Imm(asm.R4, 0x60, lPass),
	}
}

// body copies the family's source and destination addresses from the IP
// header at R2+14 into their lookup keys on the stack, reads the
// generation of the rules into R9 (see cache), then counts each address,
// and ends by jumping to lPass.
//
// The bytes and packets are measured only once a rule matched, and at most
// once. So the destination is counted by one of two blocks: sDstMeasured
// when the source matched (and measured), sDst when it did not.
func body(h Hook, f family) asm.Instructions {
	keys := f.name + sKeys
	insns := asm.Instructions{
		// src_key.prefixlen = bits;
		asm.StoreImm(asm.RFP, f.srcKey, int64(f.bits()), asm.Word).WithSymbol(keys),
	}
	insns = append(insns, copyAddr(f, f.srcKey, f.src)...)
	insns = append(insns,
		// dst_key.prefixlen = bits;
		asm.StoreImm(asm.RFP, f.dstKey, int64(f.bits()), asm.Word),
	)
	insns = append(insns, copyAddr(f, f.dstKey, f.dst)...)

	src, dstMeasured, dst := f.name+sSrc, f.name+sDstMeasured, f.name+sDst
	// The generation and the mask, once, before any lookup (see cache):
	// an array's lookup, which the kernel inlines. Without the map's
	// entry (never), gen = 1: the cache unused.
	// gen = 1; mask = 0; g = bpf_map_lookup_elem(&generation, &0);
	insns = append(insns,
		asm.Mov.Imm(rGen, 1),
		asm.StoreImm(asm.RFP, cacheMask, 0, asm.Word),
		asm.StoreImm(asm.RFP, cacheIndex, 0, asm.Word),
	)
	insns = append(insns, lookup("", maps.GenerationName, cacheIndex)...)
	insns = append(insns,
		// if (!g) goto src;
		asm.JEq.Imm(asm.R0, 0, src),
		// gen = g->gen; mask = g->mask;
		asm.LoadMem(rGen, asm.R0, maps.GenerationOff, asm.DWord),
		asm.LoadMem(asm.R1, asm.R0, maps.CacheMaskOff, asm.Word),
		asm.StoreMem(asm.RFP, cacheMask, asm.R1, asm.Word),
	)

	// The source: on a match, measure and count it, then count the
	// destination without measuring again; on none, count the
	// destination measuring it.
	insns = append(insns, countMeasuring(h, f, src, f.srcKey, maps.OutPacketsOff, dst, dstMeasured)...)
	insns = append(insns, countMeasured(h, f, dstMeasured, f.dstKey, maps.InPacketsOff, lPass, lPass)...)
	return append(insns, countMeasuring(h, f, dst, f.dstKey, maps.InPacketsOff, lPass, lPass)...)
}

// copyAddr copies the address at offset addr of the IP header at R2+14
// into the key at fp+key, a word at a time: the key is then a host route
// to look up.
func copyAddr(f family, key, addr int16) asm.Instructions {
	var insns asm.Instructions
	for w := range int16(f.words) {
		off := w * int16(f.size.Sizeof())
		insns = append(insns,
			// key.addr[w] = ip->addr[w];
			asm.LoadMem(asm.R4, asm.R2, ethHeader+addr+off, f.size),
			asm.StoreMem(asm.RFP, key+4+off, asm.R4, f.size),
		)
	}
	return insns
}

// countMeasuring emits the counting of one address when the frame is not
// measured yet: on a rule match it masks the key to the rule, measures the
// frame (h.Measure) and adds it to the rule's counters at valueOff. The
// block is labelled label; it continues at noMatch when no rule matched
// and at done otherwise.
func countMeasuring(h Hook, f family, label string, key, valueOff int16, noMatch, done string) asm.Instructions {
	measure, add := label+sMeasure, label+sAdd
	insns := matchRule(f, label, key, noMatch)
	insns = append(insns, keep(f, label, key)...)
	insns = append(insns, mask(f, label, key, measure)...)
	insns = append(insns, h.Measure(measure)...)
	return append(insns, addFrame(h, f, add, key, valueOff, done)...)
}

// countMeasured emits the counting of one address when the frame is
// already measured (R7 and R8 hold it): on a rule match it masks the key
// to the rule and adds the frame to the rule's counters at valueOff. The
// block is labelled label; it continues at noMatch when no rule matched
// and at done otherwise.
func countMeasured(h Hook, f family, label string, key, valueOff int16, noMatch, done string) asm.Instructions {
	add := label + sAdd
	insns := matchRule(f, label, key, noMatch)
	insns = append(insns, keep(f, label, key)...)
	insns = append(insns, mask(f, label, key, add)...)
	return append(insns, addFrame(h, f, add, key, valueOff, done)...)
}

// keep keeps what the breakdowns of the matched rule need (see
// breakdowns), before the host key at fp+key is masked to the rule: the
// rule's trie value, in R1, at fp+ruleValue, and the host's address at
// fp+hostAddr; then R1 &= PrefixMask, the prefix length that mask
// wants. Its first instruction is labelled label_mask, where the cache
// and the trie jump; it falls through to label_prefix (mask).
func keep(f family, label string, key int16) asm.Instructions {
	insns := asm.Instructions{
		// value = v;
		asm.StoreMem(asm.RFP, ruleValue, asm.R1, asm.Word).WithSymbol(label + sMask),
	}
	// host = key.addr;
	insns = append(insns, copyKeyAddr(f, key+4, hostAddr)...)
	return append(insns,
		// p = v & PrefixMask;
		asm.And.Imm(asm.R1, maps.PrefixMask),
	)
}

// matchRule finds the longest rule that holds the host key at fp+key,
// through the family's address cache (see cache), and jumps to noMatch
// when no rule holds the address; else the matched rule's trie value is
// in R1, and it continues at label_mask, the next instruction (keep).
// Its first instruction is labelled label.
func matchRule(f family, label string, key int16, noMatch string) asm.Instructions {
	insns := cache(f, label, key, noMatch)
	return append(insns, trie(f, label+sTrie, key, noMatch)...)
}

// trie looks the host key at fp+key up in the family's rule trie, and
// jumps to noMatch when no rule holds the address; else the matched rule's
// trie value (prefix length and options) is in R1. Its first instruction
// is labelled label.
func trie(f family, label string, key int16, noMatch string) asm.Instructions {
	return append(lookup(label, f.rules, key),
		// if (!rule) goto noMatch;
		asm.JEq.Imm(asm.R0, 0, noMatch),
		// v = rule->value;
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
	)
}

// noMatchImm is maps.CacheNoMatch as a 32-bit immediate.
const noMatchImm = int32(-1) // 0xffffffff

// hashMul is the multiplier of the cache's hash: 2^32 over the golden
// ratio, as a signed immediate.
const hashMul = -0x61c88647 // 0x9e3779b9

// cache emits the cache in front of the trie for the host key at fp+key
// (package maps, CacheV4Name, tells the protocol). While the generation
// in R9 is odd (a change of the rules in progress, or killed) it jumps
// to label_trie, the trie alone, which the caller puts next. Else it
// finds the address's bucket in the per-CPU cache, at a hash of the
// address, and trusts an entry of it only if it holds the same address
// and the same generation: then it has the result without the trie. Else
// it looks the address up in the trie and stores the result first in the
// bucket, under the generation read before that lookup, moving the others
// down a place (the last one goes). A result is a rule's trie value, or
// maps.CacheNoMatch (no trie value is), which jumps to noMatch. Both ends
// jump to label_mask with the trie value in R1. In C:
//
//	if (gen & 1) goto trie;
//	h = addr (IPv6: the xor of its 32-bit quarters) * 0x9e3779b9;
//	idx = (h ^ h >> 16) & mask;
//	b = bpf_map_lookup_elem(&cache, &idx); if (!b) goto trie;
//	for (i = 0; i < WAYS; i++) (unrolled)
//		if (b[i].addr == addr && b[i].gen == gen) {
//			v = b[i].result; if (v == NO_MATCH) goto noMatch; goto mask;
//		}
//	fill: rule = bpf_map_lookup_elem(&rules, &key);
//	v = rule ? rule->value : NO_MATCH;
//	b[WAYS-1] = b[WAYS-2]; ... b[1] = b[0];
//	b[0] = (entry){gen, addr, v};
//	if (v == NO_MATCH) goto noMatch; goto mask;
func cache(f family, label string, key int16, noMatch string) asm.Instructions {
	trieLabel, fill, store, masked := label+sTrie, label+sFill, label+sStore, label+sMask
	entrySize := int16(maps.CacheEntry4)
	if f.words == 2 {
		entrySize = maps.CacheEntry6
	}
	addr := func(w int) int16 { return key + 4 + int16(w*f.size.Sizeof()) }
	entry := func(way, w int) int16 { return int16(way)*entrySize + maps.CacheAddrOff + int16(w*f.size.Sizeof()) }
	insns := asm.Instructions{
		// if (gen & 1) goto trie;
		asm.JSet.Imm(rGen, 1, trieLabel).WithSymbol(label),
		// h = addr;
		asm.LoadMem(asm.R1, asm.RFP, addr(0), f.size),
	}
	if f.words == 2 {
		insns = append(insns,
			// h ^= addr[1]; h ^= h >> 32;
			asm.LoadMem(asm.R2, asm.RFP, addr(1), f.size),
			asm.Xor.Reg(asm.R1, asm.R2),
			asm.Mov.Reg(asm.R2, asm.R1),
			asm.RSh.Imm(asm.R2, 32),
			asm.Xor.Reg(asm.R1, asm.R2),
		)
	}
	insns = append(insns,
		// h *= 0x9e3779b9; h ^= h >> 16; (32 bits)
		asm.Mul.Imm32(asm.R1, hashMul),
		asm.Mov.Reg32(asm.R2, asm.R1),
		asm.RSh.Imm32(asm.R2, 16),
		asm.Xor.Reg32(asm.R1, asm.R2),
		// idx = h & mask;
		asm.LoadMem(asm.R2, asm.RFP, cacheMask, asm.Word),
		asm.And.Reg32(asm.R1, asm.R2),
		asm.StoreMem(asm.RFP, cacheIndex, asm.R1, asm.Word),
	)
	insns = append(insns, lookup("", f.cache, cacheIndex)...)
	insns = append(insns,
		// if (!b) goto trie; (no index is out of range)
		asm.JEq.Imm(asm.R0, 0, trieLabel),
		asm.StoreMem(asm.RFP, cacheEntry, asm.R0, asm.DWord),
	)
	for way := range maps.CacheWays {
		next := fmt.Sprint(label, sWay, way+1)
		if way == maps.CacheWays-1 {
			next = fill
		}
		first := len(insns)
		for w := range f.words {
			insns = append(insns,
				// if (b[way].addr[w] != addr[w]) goto next;
				asm.LoadMem(asm.R1, asm.R0, entry(way, w), f.size),
				asm.LoadMem(asm.R2, asm.RFP, addr(w), f.size),
				asm.JNE.Reg(asm.R1, asm.R2, next),
			)
		}
		if way > 0 {
			insns[first] = insns[first].WithSymbol(fmt.Sprint(label, sWay, way))
		}
		base := int16(way) * entrySize
		insns = append(insns,
			// if (b[way].gen != gen) goto next;
			asm.LoadMem(asm.R1, asm.R0, base+maps.CacheGenOff, asm.DWord),
			asm.JNE.Reg(asm.R1, rGen, next),
			// v = b[way].result; if (v == NO_MATCH) goto noMatch; goto mask;
			asm.LoadMem(asm.R1, asm.R0, base+f.result, asm.Word),
			asm.JEq.Imm32(asm.R1, noMatchImm, noMatch),
			asm.Ja.Label(masked),
		)
	}
	insns = append(insns, lookup(fill, f.rules, key)...)
	insns = append(insns,
		// v = rule ? rule->value : NO_MATCH;
		asm.LoadMem(asm.R1, asm.RFP, cacheEntry, asm.DWord),
		asm.Mov.Imm32(asm.R2, noMatchImm),
		asm.JEq.Imm(asm.R0, 0, store),
		asm.LoadMem(asm.R2, asm.R0, 0, asm.Word),
	)
	// b[way] = b[way-1], from the last way up, a DWord at a time.
	for way := maps.CacheWays - 1; way > 0; way-- {
		for off := int16(0); off < entrySize; off += 8 {
			ins := asm.LoadMem(asm.R3, asm.R1, int16(way-1)*entrySize+off, asm.DWord)
			if way == maps.CacheWays-1 && off == 0 {
				ins = ins.WithSymbol(store)
			}
			insns = append(insns, ins, asm.StoreMem(asm.R1, int16(way)*entrySize+off, asm.R3, asm.DWord))
		}
	}
	// b[0] = {gen, addr, v};
	insns = append(insns, asm.StoreMem(asm.R1, maps.CacheGenOff, rGen, asm.DWord))
	for w := range f.words {
		insns = append(insns,
			asm.LoadMem(asm.R3, asm.RFP, addr(w), f.size),
			asm.StoreMem(asm.R1, entry(0, w), asm.R3, f.size),
		)
	}
	return append(insns,
		asm.StoreMem(asm.R1, f.result, asm.R2, asm.Word),
		// if (v == NO_MATCH) goto noMatch; goto mask;
		asm.Mov.Reg(asm.R1, asm.R2),
		asm.JEq.Imm32(asm.R1, noMatchImm, noMatch),
		asm.Ja.Label(masked),
	)
}

// addFrame finds the stats entry of the rule whose key is at fp+key and
// adds the frame, R8 packets of R7 bytes, to its counters at valueOff,
// then counts it in the rule's breakdowns, if it has any, and jumps to
// done. A rule being added or deleted may have no stats entry yet: then
// it adds nothing, breakdowns included. Its first instruction is
// labelled label.
func addFrame(h Hook, f family, label string, key, valueOff int16, done string) asm.Instructions {
	insns := append(lookup(label, f.stats, key),
		// if (!counters) goto done;
		asm.JEq.Imm(asm.R0, 0, done),
	)
	insns = append(insns, addCounts("", valueOff)...)
	return append(insns, breakdowns(h, f, label, key, valueOff, done)...)
}

// addCounts adds the frame, R8 packets of R7 bytes, to the counters at
// valueOff of the per-CPU stats value R0 points to, its first instruction
// labelled label (none if empty). Per-CPU: a plain read-modify-write, no
// atomics needed.
func addCounts(label string, valueOff int16) asm.Instructions {
	first := asm.LoadMem(asm.R1, asm.R0, valueOff, asm.DWord)
	if label != "" {
		first = first.WithSymbol(label)
	}
	return asm.Instructions{
		// counters->packets += packets;
		first,
		asm.Add.Reg(asm.R1, rPackets),
		asm.StoreMem(asm.R0, valueOff, asm.R1, asm.DWord),
		// counters->bytes += len;
		asm.LoadMem(asm.R1, asm.R0, valueOff+8, asm.DWord),
		asm.Add.Reg(asm.R1, rLen),
		asm.StoreMem(asm.R0, valueOff+8, asm.R1, asm.DWord),
	}
}

// newValue writes at fp+newStats the stats value of a new breakdown
// row: zero but for the frame, R8 packets of R7 bytes, at valueOff. Its
// first instruction is labelled label.
func newValue(label string, valueOff int16) asm.Instructions {
	var insns asm.Instructions
	for off := int16(0); off < int16(maps.OutBytesOff+8); off += 8 {
		insns = append(insns, storeZero(newStats+off, asm.DWord))
	}
	insns[0] = insns[0].WithSymbol(label)
	return append(insns,
		asm.StoreMem(asm.RFP, newStats+valueOff, rPackets, asm.DWord),
		asm.StoreMem(asm.RFP, newStats+valueOff+8, rLen, asm.DWord),
	)
}

// countFull counts a frame that found a breakdown's table full: it adds
// its packets to the breakdown_full counter at index (maps.FullHostsV4
// ...), the index written at fp+scratch, then jumps to done. Its first
// instruction is labelled label. In C:
//
//	idx = index; c = bpf_map_lookup_elem(&breakdown_full, &idx);
//	if (c) *c += packets; goto done;
func countFull(label string, index int32, scratch int16, done string) asm.Instructions {
	insns := asm.Instructions{asm.StoreImm(asm.RFP, scratch, int64(index), asm.Word).WithSymbol(label)}
	insns = append(insns, lookup("", maps.FullName, scratch)...)
	return append(insns,
		asm.JEq.Imm(asm.R0, 0, done),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Reg(asm.R1, rPackets),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Ja.Label(done),
	)
}

// breakdowns counts the frame, already in the total of the rule whose
// key is at fp+key, in the rule's breakdowns (maps.Options), then jumps
// to done. A rule without options pays a load and a jump:
//
//	v = value; if (v < ByInterfaceBit) goto done;
//	if (v & ByInterfaceBit) countInterface(...);
//	hosts: v = value; if (v < 1 << HostsShift) goto done;
//	countHost(...);
//
// The breakdowns find the rule's trie value at fp+ruleValue and the
// address before the mask at fp+hostAddr (keep).
func breakdowns(h Hook, f family, label string, key, valueOff int16, done string) asm.Instructions {
	iface, hosts := label+sInterface, label+sHosts
	insns := asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, ruleValue, asm.Word),
		asm.JLT.Imm(asm.R1, maps.ByInterfaceBit, done),
		asm.JSet.Imm(asm.R1, maps.ByInterfaceBit, iface),
		asm.Ja.Label(hosts),
	}
	insns = append(insns, countInterface(h, f, iface, key, valueOff, hosts)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, ruleValue, asm.Word).WithSymbol(hosts),
		asm.JLT.Imm(asm.R1, 1<<maps.HostsShift, done),
	)
	return append(insns, countHost(f, hosts+sCount, key, hostAddr, valueOff, done)...)
}

// lookup emits R0 = bpf_map_lookup_elem(&m, fp+key), its first
// instruction labelled label (none if label is empty).
func lookup(label, m string, key int16) asm.Instructions {
	load := asm.LoadMapPtr(asm.R1, 0).WithReference(m)
	if label != "" {
		load = load.WithSymbol(label)
	}
	return asm.Instructions{
		load,
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.FnMapLookupElem.Call(),
	}
}

// mask turns the host key at fp+key into the key of the matched rule,
// whose prefix length p is in R1: it keeps the first p bits of the address,
// clears the rest and sets the key's prefix length to p. The address is
// handled a word at a time, at constant offsets: word i keeps all its bits
// when p covers it, none when p ends before it, and otherwise the top
// p - i*wordbits bits, under the mask ^(^0 >> n) in network byte order. A
// host rule (p = full length) needs no work at all.
//
// Its blocks are labelled label_prefix, label_word1, label_word2, ...; it ends by jumping
// to done, which the caller puts on the instruction that follows. In C,
// for IPv6 (w = 64 bits a word):
//
//	if (p >= 64) goto word1;
//	addr[0] &= htobe64(~(~0 >> (p - 0))); addr[1] = 0; key.prefixlen = p; goto done;
//	word1: if (p >= 128) goto done;
//	addr[1] &= htobe64(~(~0 >> (p - 64))); key.prefixlen = p;
//	done:
func mask(f family, label string, key int16, done string) asm.Instructions {
	wb := f.wordBits()
	word := func(w int32) string { return fmt.Sprint(label, sWord, w) }
	next := func(w int32) string {
		if w+1 == int32(f.words) {
			return done
		}
		return word(w + 1)
	}
	off := func(w int32) int16 { return key + 4 + int16(w)*int16(f.size.Sizeof()) }
	var insns asm.Instructions
	for w := range int32(f.words) {
		// if (p >= (w+1)*wordbits) goto next; (p covers the whole word)
		covers := asm.JGE.Imm(asm.R1, (w+1)*wb, next(w))
		if w > 0 {
			covers = covers.WithSymbol(word(w))
		} else {
			covers = covers.WithSymbol(label + sPrefix)
		}
		insns = append(insns,
			covers,
			// n = p - w*wordbits; (the prefix bits in this word)
			asm.Mov.Reg(asm.R2, asm.R1),
			asm.Sub.Imm(asm.R2, w*wb),
			// m = htobe(~(~0 >> n));
			asm.Mov.Imm(asm.R3, -1),
			rsh(f.size, asm.R3, asm.R2),
			xorAll(f.size, asm.R3),
			asm.HostTo(asm.BE, asm.R3, f.size),
			// key.addr[w] &= m;
			asm.LoadMem(asm.R4, asm.RFP, off(w), f.size),
			asm.And.Reg(asm.R4, asm.R3),
			asm.StoreMem(asm.RFP, off(w), asm.R4, f.size),
		)
		// The words after this one are all host bits.
		// key.addr[z] = 0; (for every z > w)
		for z := w + 1; z < int32(f.words); z++ {
			insns = append(insns, storeZero(off(z), f.size))
		}
		// key.prefixlen = p;
		insns = append(insns, asm.StoreMem(asm.RFP, key, asm.R1, asm.Word))
		if w < int32(f.words)-1 {
			// goto done;
			insns = append(insns, asm.Ja.Label(done))
		}
	}
	return insns
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

// copyKeyAddr copies a family's address from fp+from to fp+to, a word of
// the family at a time (both aligned to it), through R2.
func copyKeyAddr(f family, from, to int16) asm.Instructions {
	var insns asm.Instructions
	for w := range int16(f.words) {
		off := w * int16(f.size.Sizeof())
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.RFP, from+off, f.size),
			asm.StoreMem(asm.RFP, to+off, asm.R2, f.size),
		)
	}
	return insns
}
