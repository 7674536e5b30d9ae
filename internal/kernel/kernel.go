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
// error. Table lists the optional features, each with its mainline
// release, its probe and its fallback; version, the notices of load, the
// help of load, the tests' choice of fallback and docs/kernels.md are
// derived from it, and Fallbacks says what each fallback in use costs the
// user.
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

	"github.com/traffic-meter/traffic_meter/internal/uapi"
)

// Features are what Probe found of the running kernel: its release and,
// for each optional feature of Table, whether it has it.
type Features struct {
	// Release is the kernel's release, as uname -r prints it.
	Release string
	// MultiBuffer: whether the kernel has the feature MultiBuffer (Table).
	MultiBuffer bool
	// XDPLink: whether the kernel has the feature XDPLink (Table).
	XDPLink bool
	// TCX: whether the kernel has the feature TCX (Table).
	TCX bool
	// HashBatch: whether the kernel has the feature HashBatch (Table).
	HashBatch bool
	// LPMBatch: whether the kernel has the feature LPMBatch (Table).
	LPMBatch bool
	// WireLen and GSOSegs: whether the kernel has __sk_buff wire_len and
	// gso_segs; the feature SkbWireLen needs both.
	// Without them the egress program counts a GSO packet as one
	// (prog.TCLen).
	WireLen, GSOSegs bool
	// MemlockCharged says that the kernel charges BPF maps to
	// RLIMIT_MEMLOCK (the feature Memlock is missing) and that Probe
	// lifted the limit.
	MemlockCharged bool
}

// Fallback is a missing feature and what traffic_meter does instead.
type Fallback struct {
	// Name is the missing feature's Name, such as "multi-buffer".
	Name string
	// Notice tells the user, in a sentence, what is missing and what it
	// costs them (Feature.Notice).
	Notice string
}

// Fallbacks returns the fallbacks in use on a kernel with features f, in
// the order of Table.
func (f Features) Fallbacks() []Fallback {
	var out []Fallback
	for _, ft := range Table {
		if !ft.Has(f) {
			out = append(out, Fallback{ft.Name, ft.Notice()})
		}
	}
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
	var err error
	if f.Release, err = Release(); err != nil {
		return f, err
	}
	if f.MemlockCharged, err = liftMemlock(); err != nil {
		return f, err
	}
	if err := required(); err != nil {
		return f, err
	}
	for _, ft := range Table {
		if ft.probe == nil {
			continue
		}
		if err := ft.probe(&f); err != nil {
			return f, fmt.Errorf("probe the kernel for %s: %w", ft.What, err)
		}
	}
	return f, nil
}

// Release returns the running kernel's release, as uname -r prints it. It
// needs no privilege.
func Release() (string, error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return "", fmt.Errorf("read the kernel release: %w", err)
	}
	return unix.ByteSliceToString(uts.Release[:]), nil
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

// UnsupportedError is a kernel that lacks what traffic_meter cannot run
// without: What says what is missing; TooOld, that the kernel is older
// than the oldest traffic_meter runs on.
type UnsupportedError struct {
	What   string
	TooOld bool
}

func (e *UnsupportedError) Error() string { return e.What }

// required checks what traffic_meter cannot run without.
func required() error {
	code, err := features.LinuxVersionCode()
	if err != nil {
		return fmt.Errorf("read the kernel version: %w", err)
	}
	if major, minor := code>>16, code>>8&0xff; major < 5 || major == 5 && minor < 4 {
		return &UnsupportedError{What: fmt.Sprintf("this kernel is Linux %d.%d, older than 5.4, the oldest traffic_meter runs on", major, minor), TooOld: true}
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
			return &UnsupportedError{What: fmt.Sprintf("this kernel has no %s, which traffic_meter needs", r.what)}
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

// inNetns runs probe in a network namespace made for it, on a thread of
// its own that dies with it: nothing outside the probe sees what it
// attaches to the namespace's loopback interface.
func inNetns(probe func(lo int) (bool, error)) (bool, error) {
	type result struct {
		have bool
		err  error
	}
	done := make(chan result)
	go func() {
		// The thread is never unlocked: it ends with the goroutine, and
		// the namespace with it.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("make a network namespace to probe attachments in: %w", err)}
			return
		}
		const lo = 1 // the loopback interface's index, in every namespace
		var r result
		r.have, r.err = probe(lo)
		done <- r
	}()
	r := <-done
	return r.have, r.err
}

// xdpLink probes XDP bpf_links by attaching a program that passes every
// frame to the interface lo.
func xdpLink(lo int) (bool, error) {
	xdp, err := ebpf.NewProgram(uapi.Passthrough(ebpf.XDP))
	if err != nil {
		return false, fmt.Errorf("load an XDP program: %w", err)
	}
	defer xdp.Close()
	l, err := link.AttachXDP(link.XDPOptions{Program: xdp, Interface: lo, Flags: link.XDPGenericMode})
	// Before 5.7 there are no bpf_links at all (ErrNotSupported); 5.7 and
	// 5.8 have them, but not for XDP (EINVAL).
	if errors.Is(err, unix.EINVAL) {
		err = ebpf.ErrNotSupported
	}
	if l != nil {
		l.Close()
	}
	return have(err)
}

// tcx probes TCX by attaching a TC program that passes every packet to
// the egress of the interface lo.
func tcx(lo int) (bool, error) {
	cls, err := ebpf.NewProgram(uapi.Passthrough(ebpf.SchedCLS))
	if err != nil {
		return false, fmt.Errorf("load a TC program: %w", err)
	}
	defer cls.Close()
	l, err := link.AttachTCX(link.TCXOptions{Program: cls, Attach: ebpf.AttachTCXEgress, Interface: lo})
	if l != nil {
		l.Close()
	}
	return have(err)
}
