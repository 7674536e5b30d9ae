// Package kernel finds out, once per process, what the running kernel
// offers traffic_meter, and is the one place where kernel features are
// probed.
//
// Probe lifts RLIMIT_MEMLOCK where the kernel charges BPF maps to it
// (before Linux 5.11), checks that the kernel can run traffic_meter at all
// (Linux 5.4, XDP, LPM tries, per-CPU hashes), and probes each optional
// feature by trying it, never by reading the version: distributions
// backport features. A feature is missing only when the kernel says it does
// not know it; any other failure of a probe (EPERM, for example) is an
// error. Each missing optional feature has a fallback, and Fallbacks says
// what each one in use costs the user.
package kernel

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Features are the optional kernel features traffic_meter uses, each with
// the mainline release that brought it.
type Features struct {
	// Release is the kernel's release, as uname -r prints it.
	Release string
	// MultiBuffer: bpf_xdp_get_buff_len and multi-buffer XDP programs
	// (5.18).
	MultiBuffer bool
	// XDPLink: XDP attachments as bpf_links (5.9).
	XDPLink bool
	// TCX: TC programs attached as bpf_links, without a qdisc (6.6).
	TCX bool
	// HashBatch: batch lookup, update and delete on (per-CPU) hash maps
	// (5.6).
	HashBatch bool
	// LPMBatch: batch lookup, update and delete on LPM tries (5.13).
	LPMBatch bool
	// WireLen and GSOSegs: a TC program may read __sk_buff's wire_len
	// (5.0) and gso_segs (5.1). Both are older than the oldest kernel
	// traffic_meter runs on, and are probed all the same: without them
	// the egress program counts a GSO packet as one (prog.TCLen).
	WireLen, GSOSegs bool
	// MemlockCharged says that the kernel charges BPF maps to
	// RLIMIT_MEMLOCK (before 5.11, when memory cgroups took over) and
	// that Probe lifted the limit.
	MemlockCharged bool
}

// Fallback is a missing feature and what traffic_meter does instead.
type Fallback struct {
	// Name is a short name of the missing feature, such as
	// "multi-buffer".
	Name string
	// Notice tells the user, in a sentence, what is missing and what it
	// costs them.
	Notice string
}

// Fallbacks returns the fallbacks in use on a kernel with features f.
func (f Features) Fallbacks() []Fallback {
	var out []Fallback
	add := func(have bool, name, notice string) {
		if !have {
			out = append(out, Fallback{name, notice})
		}
	}
	add(!f.MemlockCharged, "memlock",
		"this kernel charges BPF maps to RLIMIT_MEMLOCK (before Linux 5.11): traffic_meter lifted the limit for itself")
	add(f.MultiBuffer, "multi-buffer",
		"this kernel has no bpf_xdp_get_buff_len (Linux 5.18): multi-buffer (jumbo) frames are counted by their first buffer only")
	add(f.XDPLink, "xdp-link",
		"this kernel has no XDP bpf_links (Linux 5.9): the program is attached through netlink, where any tool can detach or replace it unseen until the next traffic_meter command")
	add(f.TCX, "tcx",
		"this kernel has no TCX (Linux 6.6): TC programs are attached as cls_bpf filters of a clsact qdisc, which other tc users can remove")
	add(f.WireLen && f.GSOSegs, "skb-wire-len",
		"this kernel has no __sk_buff wire_len and gso_segs (Linux 5.1): egress counts a GSO packet as one packet of its own length, without the headers of its other segments")
	add(f.HashBatch, "hash-batch",
		"this kernel has no batch operations on hash maps (Linux 5.6): stats are read one rule at a time, slower with many rules")
	add(f.LPMBatch, "lpm-batch",
		"this kernel has no batch operations on LPM tries (Linux 5.13): rules are read and written one at a time, slower with many rules")
	return out
}

var (
	once     sync.Once
	probed   Features
	probeErr error
)

// Probe lifts RLIMIT_MEMLOCK where needed and probes the kernel's features,
// the first time it is called; later calls return the same. It needs root,
// as every probe loads a program or creates a map. It returns an error when
// the kernel cannot run traffic_meter, naming what is missing, or when a
// probe failed for any reason but the feature's absence.
func Probe() (Features, error) {
	once.Do(func() { probed, probeErr = probe() })
	return probed, probeErr
}

func probe() (Features, error) {
	var f Features
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return f, fmt.Errorf("read the kernel release: %w", err)
	}
	f.Release = unix.ByteSliceToString(uts.Release[:])

	var err error
	if f.MemlockCharged, err = liftMemlock(); err != nil {
		return f, err
	}
	if err := required(); err != nil {
		return f, err
	}
	for _, p := range []struct {
		what  string
		have  *bool
		probe func() error
	}{
		{"bpf_xdp_get_buff_len", &f.MultiBuffer, func() error { return features.HaveProgramHelper(ebpf.XDP, asm.FnXdpGetBuffLen) }},
		{"batch operations on hash maps", &f.HashBatch, func() error { return batch(ebpf.PerCPUHash) }},
		{"batch operations on LPM tries", &f.LPMBatch, func() error { return batch(ebpf.LPMTrie) }},
		{"__sk_buff wire_len", &f.WireLen, func() error { return skbField(wireLenOff) }},
		{"__sk_buff gso_segs", &f.GSOSegs, func() error { return skbField(gsoSegsOff) }},
	} {
		if *p.have, err = have(p.probe()); err != nil {
			return f, fmt.Errorf("probe the kernel for %s: %w", p.what, err)
		}
	}
	if f.XDPLink, f.TCX, err = links(); err != nil {
		return f, err
	}
	return f, nil
}

// have turns a probe's error into whether the feature is there.
func have(err error) (bool, error) {
	if errors.Is(err, ebpf.ErrNotSupported) {
		return false, nil
	}
	return err == nil, err
}

// liftMemlock lifts RLIMIT_MEMLOCK if the kernel charges BPF maps to it,
// and says whether it did.
func liftMemlock() (bool, error) {
	var before, after unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &before); err != nil {
		return false, fmt.Errorf("read RLIMIT_MEMLOCK: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return false, fmt.Errorf("this kernel charges BPF maps to RLIMIT_MEMLOCK (before Linux 5.11) and the limit cannot be lifted: %w", err)
	}
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &after); err != nil {
		return false, fmt.Errorf("read RLIMIT_MEMLOCK: %w", err)
	}
	return before != after, nil
}

// required checks what traffic_meter cannot run without.
func required() error {
	code, err := features.LinuxVersionCode()
	if err != nil {
		return fmt.Errorf("read the kernel version: %w", err)
	}
	if major, minor := code>>16, code>>8&0xff; major < 5 || major == 5 && minor < 4 {
		return fmt.Errorf("this kernel is Linux %d.%d, older than 5.4, the oldest traffic_meter runs on: upgrade the kernel", major, minor)
	}
	for _, r := range []struct {
		what string
		err  error
	}{
		{"XDP programs (Linux 4.8)", features.HaveProgramType(ebpf.XDP)},
		{"LPM trie maps (Linux 4.11)", features.HaveMapType(ebpf.LPMTrie)},
		{"per-CPU hash maps (Linux 4.6)", features.HaveMapType(ebpf.PerCPUHash)},
	} {
		ok, err := have(r.err)
		if err != nil {
			return fmt.Errorf("probe the kernel for %s: %w", r.what, err)
		}
		if !ok {
			return fmt.Errorf("this kernel has no %s, which traffic_meter needs: use a kernel that has it", r.what)
		}
	}
	return nil
}

// batch probes batch updates and lookups on a map of type t.
func batch(t ebpf.MapType) error {
	spec := &ebpf.MapSpec{Type: t, KeySize: 8, ValueSize: 8, MaxEntries: 1}
	if t == ebpf.LPMTrie {
		spec.Flags = unix.BPF_F_NO_PREALLOC
	}
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return err
	}
	defer m.Close()
	per := 1
	if t == ebpf.PerCPUHash {
		per = ebpf.MustPossibleCPU()
	}
	// An LPM trie key is {u32 prefix length; address}: a /32 here.
	keys := []uint64{32}
	values := make([]uint64, per)
	if _, err := m.BatchUpdate(keys, values, nil); err != nil {
		return err
	}
	var cursor ebpf.MapBatchCursor
	_, err = m.BatchLookup(&cursor, keys, values, nil)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil // the end of the map, reached in one batch
	}
	return err
}

// Offsets of fields in struct __sk_buff.
const (
	wireLenOff = 160
	gsoSegsOff = 164
)

// skbField probes whether a TC program may read the 32-bit field of
// __sk_buff at off: a kernel that does not know it rejects the program.
func skbField(off int16) error {
	load := func(insns ...asm.Instruction) error {
		p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.SchedCLS, License: "GPL",
			Instructions: append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return()),
		})
		if err == nil {
			p.Close()
		}
		return err
	}
	if err := load(); err != nil {
		return fmt.Errorf("load a TC program: %w", err)
	}
	err := load(asm.LoadMem(asm.R2, asm.R1, off, asm.Word))
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EINVAL) {
		return ebpf.ErrNotSupported // the verifier refused the access
	}
	return err
}

// links probes XDP bpf_links and TCX by attaching a program that does
// nothing to the loopback interface of a network namespace made for the
// probe, on a thread of its own that dies with it: nothing outside the
// probe sees it.
func links() (xdpLink, tcx bool, err error) {
	type result struct {
		xdpLink, tcx bool
		err          error
	}
	done := make(chan result)
	go func() {
		// The thread is never unlocked: it ends with the goroutine, and
		// the namespace with it.
		runtime.LockOSThread()
		var r result
		r.xdpLink, r.tcx, r.err = linksHere()
		done <- r
	}()
	r := <-done
	return r.xdpLink, r.tcx, r.err
}

func linksHere() (xdpLink, tcx bool, err error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return false, false, fmt.Errorf("make a network namespace to probe attachments in: %w", err)
	}
	const lo = 1 // the loopback interface's index, in every namespace
	xdp, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()},
	})
	if err != nil {
		return false, false, fmt.Errorf("load an XDP program: %w", err)
	}
	defer xdp.Close()
	l, err := link.AttachXDP(link.XDPOptions{Program: xdp, Interface: lo, Flags: link.XDPGenericMode})
	// Before 5.7 there are no bpf_links at all (ErrNotSupported); 5.7 and
	// 5.8 have them, but not for XDP (EINVAL).
	if errors.Is(err, unix.EINVAL) {
		err = ebpf.ErrNotSupported
	}
	if xdpLink, err = have(err); err != nil {
		return false, false, fmt.Errorf("probe the kernel for XDP bpf_links: %w", err)
	}
	if l != nil {
		l.Close()
	}

	cls, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1 /* TC_ACT_UNSPEC */), asm.Return()},
	})
	if err != nil {
		return false, false, fmt.Errorf("load a TC program: %w", err)
	}
	defer cls.Close()
	l, err = link.AttachTCX(link.TCXOptions{Program: cls, Attach: ebpf.AttachTCXEgress, Interface: lo})
	if tcx, err = have(err); err != nil {
		return false, false, fmt.Errorf("probe the kernel for TCX: %w", err)
	}
	if l != nil {
		l.Close()
	}
	return xdpLink, tcx, nil
}
