package prog

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// TCHook returns the best TC hook this kernel supports, and whether that is
// the skb->len fallback.
func TCHook() (Hook, bool) {
	if haveGSOSegs() {
		return TCEgress, false
	}
	return TCLen, true
}

// haveGSOSegs reports whether a TC program may read __sk_buff.gso_segs
// (Linux 5.1), and so wire_len (Linux 5.0), which came before it.
func haveGSOSegs() bool {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R0, asm.R1, skbGSOSegs, asm.Word),
			asm.Mov.Imm(asm.R0, TCNext),
			asm.Return(),
		},
	})
	if err != nil {
		return false
	}
	p.Close()
	return true
}
