package prog

import (
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/maps"
)

// The per-interface rows (maps.IfaceV4Name) of a rule with the option
// by-interface: after the rule's stats entry got the frame, countInterface
// adds it to the rule's row of this attachment (Hook.Attachment), making
// the row on the frame's first. Its stack is the breakdowns' scratch
// (see breakdowns):
//
//	fp-184  the index of the family's counter of breakdown_full
//	fp-180  the row key: the rule key's prefix length,
//	fp-176  its address (IPv4 a word, IPv6 two DWords, aligned),
//	fp-172  (IPv4) or fp-160 (IPv6) the attachment's number
//	fp-152  a new row's value (maps.Stats), to fp-121 (newStats)
const (
	fullIndex = interfaceRow
	rowKey    = interfaceRow + 4
)

// Labels within the block of countInterface: sRowAdd adds the frame to
// the row found, sRowNew makes the row, sRowFull counts a frame that
// found no room.
const (
	sRowAdd  = "_add"
	sRowNew  = "_new"
	sRowFull = "_full"
)

// rowsOf returns the name of the family's rows table and the index of its
// counter in the breakdown_full map.
func (f family) rowsOf() (name string, full int32) {
	if f.words == 1 {
		return maps.IfaceV4Name, maps.FullInterfacesV4
	}
	return maps.IfaceV6Name, maps.FullInterfacesV6
}

// countInterface adds the frame, R8 packets of R7 bytes, to the row of
// the rule whose (masked) key is at fp+key and of this program's
// attachment, at valueOff of the row's Stats, then jumps to next. A
// missing row is made with the frame as its count (BPF_NOEXIST); when
// another CPU made it first (EEXIST) the frame is added to that one;
// when the table has no room (E2BIG, or ENOMEM) the frame stays in the
// rule's remainder and its packets are added to the family's counter of
// breakdown_full. In C:
//
//	row = {key, ATTACHMENT};
//	r = bpf_map_lookup_elem(&iface, &row); if (r) goto add;
//	new: v = {0}; v[valueOff] = {packets, len};
//	err = bpf_map_update_elem(&iface, &row, &v, BPF_NOEXIST);
//	if (!err) goto next; if (err != -EEXIST) goto full;
//	r = bpf_map_lookup_elem(&iface, &row); if (!r) goto next;
//	add: r[valueOff] += {packets, len}; goto next;
//	full: c = bpf_map_lookup_elem(&breakdown_full, &FULL); if (c) *c += packets;
func countInterface(h Hook, f family, label string, key, valueOff int16, next string) asm.Instructions {
	table, full := f.rowsOf()
	add, create, noRoom := label+sRowAdd, label+sRowNew, label+sRowFull
	insns := asm.Instructions{
		// row.prefixlen = key.prefixlen;
		asm.LoadMem(asm.R1, asm.RFP, key, asm.Word).WithSymbol(label),
		asm.StoreMem(asm.RFP, rowKey, asm.R1, asm.Word),
	}
	insns = append(insns, copyKeyAddr(f, key+4, rowKey+4)...)
	number := rowKey + 4 + int16(f.words*f.size.Sizeof())
	insns = append(insns,
		// row.attachment = ATTACHMENT;
		asm.StoreImm(asm.RFP, number, int64(h.Attachment), asm.Word),
	)
	insns = append(insns, lookup("", table, rowKey)...)
	insns = append(insns,
		// if (!r) goto new;
		asm.JEq.Imm(asm.R0, 0, create),
	)
	// r->packets += packets; r->bytes += len; goto next;
	insns = append(insns, addCounts(add, valueOff)...)
	insns = append(insns, asm.Ja.Label(next))
	// new: v = {0}; v.packets = packets; v.bytes = len; (at valueOff)
	insns = append(insns, newValue(create, valueOff)...)
	insns = append(insns,
		// err = bpf_map_update_elem(&iface, &row, &v, BPF_NOEXIST);
		asm.LoadMapPtr(asm.R1, 0).WithReference(table),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, rowKey),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, newStats),
		asm.Mov.Imm(asm.R4, unix.BPF_NOEXIST),
		asm.FnMapUpdateElem.Call(),
		// if (!err) goto next; if (err != -EEXIST) goto full;
		asm.JEq.Imm(asm.R0, 0, next),
		asm.JNE.Imm(asm.R0, -int32(unix.EEXIST), noRoom),
	)
	// Another CPU made the row first: add to it.
	insns = append(insns, lookup("", table, rowKey)...)
	insns = append(insns,
		// if (r) goto add; goto next;
		asm.JNE.Imm(asm.R0, 0, add),
		asm.Ja.Label(next),
	)
	return append(insns, countFull(noRoom, full, fullIndex, next)...)
}
