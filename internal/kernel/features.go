package kernel

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"

	"github.com/traffic-meter/traffic_meter/internal/uapi"
)

// Feature is an optional kernel feature traffic_meter uses: what it is,
// the mainline release that brought it, how Probe finds it, and what
// traffic_meter does without it. Table lists them all; docs/kernels.md
// shows the same table (a test compares the two).
type Feature struct {
	// Name is the feature's short name, such as "multi-buffer": the key
	// of version --json and the name of its fallback in status --json.
	Name string
	// What is what the feature is, as version lists it and a notice says
	// the kernel lacks it.
	What string
	// Version is the mainline Linux release that brought the feature.
	Version string
	// Fallback is what traffic_meter does without the feature, and what
	// that costs the user: the second half of the notice.
	Fallback string
	// lacks is the first half of the notice, after "this kernel ", when
	// it is not "has no What (Linux Version)".
	lacks string
	// has says whether a kernel with features f has it.
	has func(f Features) bool
	// probe finds out whether the kernel has it, setting its fields of f;
	// it is nil for Memlock, which Probe finds out first of all, as it
	// lifts the limit every other probe's maps and programs are charged
	// to.
	probe func(f *Features) error
}

// The optional features, in the order of Table.
var (
	// Memlock is the accounting of BPF memory by memory cgroups, instead
	// of RLIMIT_MEMLOCK.
	Memlock = &Feature{
		Name: "memlock", What: "memory-cgroup accounting of BPF memory", Version: "5.11",
		lacks:    "charges BPF maps to RLIMIT_MEMLOCK (before Linux 5.11)",
		Fallback: "traffic_meter lifted the limit for itself",
		has:      func(f Features) bool { return !f.MemlockCharged },
	}
	// MultiBuffer is bpf_xdp_get_buff_len and multi-buffer XDP programs.
	MultiBuffer = &Feature{
		Name: "multi-buffer", What: "bpf_xdp_get_buff_len", Version: "5.18",
		Fallback: "multi-buffer (jumbo) frames are counted by their first buffer only",
		has:      func(f Features) bool { return f.MultiBuffer },
		probe: func(f *Features) (err error) {
			f.MultiBuffer, err = have(features.HaveProgramHelper(ebpf.XDP, asm.FnXdpGetBuffLen))
			return err
		},
	}
	// XDPLink is XDP attachments as bpf_links.
	XDPLink = &Feature{
		Name: "xdp-link", What: "XDP bpf_links", Version: "5.9",
		Fallback: "the program is attached through netlink, where any tool can detach or replace it unseen until the next traffic_meter command",
		has:      func(f Features) bool { return f.XDPLink },
		probe: func(f *Features) (err error) {
			f.XDPLink, err = inNetns(xdpLink)
			return err
		},
	}
	// TCX is TC programs attached as bpf_links, without a qdisc.
	TCX = &Feature{
		Name: "tcx", What: "TCX", Version: "6.6",
		Fallback: "TC programs are attached as cls_bpf filters of a clsact qdisc, which other tc users can remove",
		has:      func(f Features) bool { return f.TCX },
		probe: func(f *Features) (err error) {
			f.TCX, err = inNetns(tcx)
			return err
		},
	}
	// SkbWireLen is the __sk_buff fields wire_len (Linux 5.0) and
	// gso_segs (5.1), which a TC program may read. Both are older than
	// the oldest kernel traffic_meter runs on, and are probed all the
	// same. TC ingress needs gso_segs only (prog.TCIngress).
	SkbWireLen = &Feature{
		Name: "skb-wire-len", What: "__sk_buff wire_len and gso_segs", Version: "5.1",
		Fallback: "TC counts a GSO packet it sends, or a GRO aggregate it receives, as one packet of its own length, without the headers of its other segments",
		has:      func(f Features) bool { return f.WireLen && f.GSOSegs },
		probe: func(f *Features) (err error) {
			if f.WireLen, err = have(skbField(uapi.SkbWireLen)); err != nil {
				return err
			}
			f.GSOSegs, err = have(skbField(uapi.SkbGSOSegs))
			return err
		},
	}
	// HashBatch is batch lookup, update and delete on (per-CPU) hash
	// maps.
	HashBatch = &Feature{
		Name: "hash-batch", What: "batch operations on hash maps", Version: "5.6",
		Fallback: "stats are read one rule at a time, slower with many rules",
		has:      func(f Features) bool { return f.HashBatch },
		probe: func(f *Features) (err error) {
			f.HashBatch, err = have(batch(ebpf.PerCPUHash))
			return err
		},
	}
	// LPMBatch is batch lookup, update and delete on LPM tries.
	LPMBatch = &Feature{
		Name: "lpm-batch", What: "batch operations on LPM tries", Version: "5.13",
		Fallback: "rules are read and written one at a time, slower with many rules",
		has:      func(f Features) bool { return f.LPMBatch },
		probe: func(f *Features) (err error) {
			f.LPMBatch, err = have(batch(ebpf.LPMTrie))
			return err
		},
	}
)

// Table is every optional feature, in the order version lists them and
// load tells their fallbacks.
var Table = []*Feature{Memlock, MultiBuffer, XDPLink, TCX, SkbWireLen, HashBatch, LPMBatch}

// Has says whether a kernel with features f has the feature.
func (ft *Feature) Has(f Features) bool { return ft.has(f) }

// Since is the mainline release that brought the feature, as people read
// it: "Linux 5.9".
func (ft *Feature) Since() string { return "Linux " + ft.Version }

// Notice tells the user, in a sentence, that the kernel lacks the feature
// and what that costs them.
func (ft *Feature) Notice() string {
	lacks := ft.lacks
	if lacks == "" {
		lacks = "has no " + ft.What + " (" + ft.Since() + ")"
	}
	return "this kernel " + lacks + ": " + ft.Fallback
}
