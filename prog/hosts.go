package prog

import (
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/maps"
)

// Labels of countHost's blocks, after its own label.
const (
	sHostNew   = "_new"
	sHostAgain = "_again"
	sHostAdd   = "_add"
	sHostFull  = "_full"
)

// hostTables returns the family's outer map of host tables and its index
// in the breakdown_full map.
func hostTables(f family) (outer string, full int32) {
	if f.rules == maps.RulesV4Name {
		return maps.HostsV4Name, maps.FullHostsV4
	}
	return maps.HostsV6Name, maps.FullHostsV6
}

// countHost counts the frame, R8 packets of R7 bytes, already in the total
// of the rule whose masked key is at fp+key, in the row of the address at
// fp+host (before the mask) in the rule's host table (maps.HostsV4Name),
// at valueOff of the row's stats, then jumps to done. Its first
// instruction is labelled label. The table's pointer is not kept across
// a helper call (no register is free): the table is looked up again on a
// host's first frame, which is rare. In C:
//
//	table = bpf_map_lookup_elem(&hosts, &key); if (!table) goto done;
//	row = bpf_map_lookup_elem(table, &host); if (row) goto add;
//	new: new = {0}; new[valueOff] = {packets, len};
//	table = bpf_map_lookup_elem(&hosts, &key); if (!table) goto done;
//	err = bpf_map_update_elem(table, &host, &new, BPF_NOEXIST);
//	if (err == 0) goto done;
//	if (err != -EEXIST) goto full;
//	again: (another CPU made the row first)
//	table = bpf_map_lookup_elem(&hosts, &key); if (!table) goto done;
//	row = bpf_map_lookup_elem(table, &host); if (!row) goto done;
//	add: row->packets += packets; row->bytes += len; goto done;
//	full: (the table is full, E2BIG, or the kernel found no memory)
//	idx = FullHostsVx; c = bpf_map_lookup_elem(&breakdown_full, &idx);
//	if (c) *c += packets; goto done;
//
// A table swapped out while the frame is in it (hosts --clear, a new
// capacity, del) takes the frame or not: either way the row goes, and the
// frame is in the rule's remainder, which is derived (maps.RuleHosts).
func countHost(f family, label string, key, host, valueOff int16, done string) asm.Instructions {
	outer, full := hostTables(f)
	newRow, again, add, fullLabel := label+sHostNew, label+sHostAgain, label+sHostAdd, label+sHostFull
	// table emits R0 = bpf_map_lookup_elem(&hosts, &key); if (!R0) goto done;
	table := func(label string) asm.Instructions {
		return append(lookup(label, outer, key), asm.JEq.Imm(asm.R0, 0, done))
	}
	// row emits R0 = bpf_map_lookup_elem(R0, &host);
	row := asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(host)),
		asm.FnMapLookupElem.Call(),
	}
	insns := table(label)
	insns = append(insns, row...)
	insns = append(insns,
		// if (row) goto add;
		asm.JNE.Imm(asm.R0, 0, add),
	)
	// new = {0}; new[valueOff] = {packets, len};
	insns = append(insns, newValue(newRow, valueOff)...)
	insns = append(insns, table("")...)
	insns = append(insns,
		// err = bpf_map_update_elem(table, &host, &new, BPF_NOEXIST);
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(host)),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, int32(newStats)),
		asm.Mov.Imm(asm.R4, unix.BPF_NOEXIST),
		asm.FnMapUpdateElem.Call(),
		// if (err == 0) goto done; if (err != -EEXIST) goto full;
		asm.JEq.Imm(asm.R0, 0, done),
		asm.JNE.Imm(asm.R0, -int32(unix.EEXIST), fullLabel),
	)
	insns = append(insns, table(again)...)
	insns = append(insns, row...)
	insns = append(insns,
		// if (!row) goto done;
		asm.JEq.Imm(asm.R0, 0, done),
	)
	// row->packets += packets; row->bytes += len; goto done;
	insns = append(insns, addCounts(add, valueOff)...)
	insns = append(insns, asm.Ja.Label(done))
	// (the new row's scratch is free again for the index)
	return append(insns, countFull(fullLabel, full, newStats, done)...)
}
