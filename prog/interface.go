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
		// r->packets += packets; r->bytes += len; goto next;
		asm.LoadMem(asm.R1, asm.R0, valueOff, asm.DWord).WithSymbol(add),
		asm.Add.Reg(asm.R1, rPackets),
		asm.StoreMem(asm.R0, valueOff, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R0, valueOff+8, asm.DWord),
		asm.Add.Reg(asm.R1, rLen),
		asm.StoreMem(asm.R0, valueOff+8, asm.R1, asm.DWord),
		asm.Ja.Label(next),
	)
	// new: v = {0}; v.packets = packets; v.bytes = len; (at valueOff)
	for off := int16(0); off < int16(maps.OutBytesOff+8); off += 8 {
		ins := storeZero(newStats+off, asm.DWord)
		if off == 0 {
			ins = ins.WithSymbol(create)
		}
		insns = append(insns, ins)
	}
	insns = append(insns,
		asm.StoreMem(asm.RFP, newStats+valueOff, rPackets, asm.DWord),
		asm.StoreMem(asm.RFP, newStats+valueOff+8, rLen, asm.DWord),
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
		// full: c = bpf_map_lookup_elem(&breakdown_full, &FULL);
		asm.StoreImm(asm.RFP, fullIndex, int64(full), asm.Word).WithSymbol(noRoom),
	)
	insns = append(insns, lookup("", maps.FullName, fullIndex)...)
	return append(insns,
		// if (c) *c += packets; goto next;
		asm.JEq.Imm(asm.R0, 0, next),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Reg(asm.R1, rPackets),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Ja.Label(next),
	)
}

// copyKeyAddr copies a family's address from fp+from to fp+to, a word of
// the family at a time (both aligned to it).
func copyKeyAddr(f family, from, to int16) asm.Instructions {
	var insns asm.Instructions
	for w := range int16(f.words) {
		off := w * int16(f.size.Sizeof())
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, from+off, f.size),
			asm.StoreMem(asm.RFP, to+off, asm.R1, f.size),
		)
	}
	return insns
}
