package uapi

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

func TestPassthrough(t *testing.T) {
	for _, c := range []struct {
		typ  ebpf.ProgramType
		want int32
	}{
		{ebpf.XDP, XDPPass},
		{ebpf.SchedCLS, TCActUnspec},
	} {
		spec := Passthrough(c.typ)
		want := asm.Instructions{asm.Mov.Imm(asm.R0, c.want), asm.Return()}
		if spec.Type != c.typ || spec.License != "GPL" || fmt.Sprint(spec.Instructions) != fmt.Sprint(want) {
			t.Errorf("Passthrough(%s) = %+v, want a %s program of %v", c.typ, spec, c.typ, want)
		}
	}
}

// No pass verdict is made up for a type traffic_meter does not load.
func TestPassVerdictUnknown(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("PassVerdict(Kprobe) did not panic")
		}
	}()
	PassVerdict(ebpf.Kprobe)
}
