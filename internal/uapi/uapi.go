// Package uapi holds the constants of the kernel's user-space API that
// traffic_meter's programs, probes and tests use, each with the uapi name
// and header it comes from, and the program that only passes a packet on
// with the verdict of its program type. It imports nothing of the project.
package uapi

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Offsets of the fields of struct xdp_md (include/uapi/linux/bpf.h), an XDP
// program's context.
const (
	// XDPMDData is xdp_md.data: the start of the packet.
	XDPMDData = 0
	// XDPMDDataEnd is xdp_md.data_end: the end of the packet's linear
	// part.
	XDPMDDataEnd = 4
)

// Offsets of the fields of struct __sk_buff (include/uapi/linux/bpf.h), a
// TC program's context.
const (
	// SkbLen is __sk_buff.len: the bytes of the skb, every segment of a
	// GSO packet together, under one set of headers.
	SkbLen = 0
	// SkbVLANPresent is __sk_buff.vlan_present: 1 when the skb carries a
	// VLAN tag out of band, else 0.
	SkbVLANPresent = 20
	// SkbData is __sk_buff.data: the start of the packet.
	SkbData = 76
	// SkbDataEnd is __sk_buff.data_end: the end of the packet's linear
	// part.
	SkbDataEnd = 80
	// SkbWireLen is __sk_buff.wire_len (Linux 5.0): on egress, the bytes
	// of every segment a GSO packet becomes, each with its own headers.
	SkbWireLen = 160
	// SkbGSOSegs is __sk_buff.gso_segs (Linux 5.1): the number of
	// segments a GSO packet becomes, 0 or 1 for any other.
	SkbGSOSegs = 164
)

// Verdicts.
const (
	// XDPPass is XDP_PASS (enum xdp_action, include/uapi/linux/bpf.h):
	// the frame goes on up the stack.
	XDPPass = 2
	// TCActUnspec is TC_ACT_UNSPEC (include/uapi/linux/pkt_cls.h): a
	// cls_bpf filter's verdict that passes the packet on to the next
	// filter, and then on its way.
	TCActUnspec = -1
	// TCXNext is TCX_NEXT (enum tcx_action_base,
	// include/uapi/linux/bpf.h): a TCX program's verdict that passes the
	// packet on to the next program, and then on its way. It equals
	// TCActUnspec, so one TC program serves both.
	TCXNext = TCActUnspec
)

// XDPAttachedSKB is XDP_ATTACHED_SKB (include/uapi/linux/if_link.h): an
// XDP program attached in generic mode, as netlink reports it.
const XDPAttachedSKB = 2

// PassVerdict returns the verdict with which a program of type t passes a
// packet on unchanged: XDPPass for XDP, TCActUnspec (TCXNext) for TC. It
// panics for any other type, which traffic_meter never loads.
func PassVerdict(t ebpf.ProgramType) int32 {
	switch t {
	case ebpf.XDP:
		return XDPPass
	case ebpf.SchedCLS:
		return TCActUnspec
	}
	panic(fmt.Sprintf("uapi: no pass verdict for program type %s", t))
}

// Passthrough returns the spec of a program of type t that does nothing
// but return PassVerdict(t).
func Passthrough(t ebpf.ProgramType) *ebpf.ProgramSpec {
	return &ebpf.ProgramSpec{
		Type:    t,
		License: "GPL",
		Instructions: asm.Instructions{
			// return verdict;
			asm.Mov.Imm(asm.R0, PassVerdict(t)),
			asm.Return(),
		},
	}
}
