package attach

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
)

// TCPath is how a TC program is attached, by name: the TC form of a
// Method, as the --tc flag and status name it.
type TCPath string

// The TC paths.
const (
	// TCX attaches with a TCX bpf_link (Linux 6.6), pinned.
	TCX TCPath = "tcx"
	// Clsact attaches a direct-action cls_bpf filter to a clsact qdisc
	// through netlink, the program pinned.
	Clsact TCPath = "clsact"
)

// filterPriority is the priority of our cls_bpf filters on the clsact
// qdisc. The kernel picks each filter's handle, so that other filters,
// another pin directory's included, may share the priority; ours is found
// by its program's ID.
const filterPriority = 0xc7a6

// tc is the TC hook of one direction: tcx is the TCX attach type of that
// direction, parent the parent handle of its filters on the clsact qdisc.
// TC programs and filters run one after the other, and ours returns
// "continue" (TC_ACT_UNSPEC or TCX_NEXT), so others may share the hook.
type tc struct {
	tcx    ebpf.AttachType
	parent uint32
}

// tcPaths are the TC paths, each the way a method attaches at TC.
var tcPaths = map[Method]TCPath{Link: TCX, Netlink: Clsact}

// tcPinMethods begin the names of TC pins: a TCX link, or the program of
// a clsact filter.
var tcPinMethods = map[Method]string{Link: "tcx", Netlink: "tc"}

// tcWays say how each method attaches at TC, in words.
var tcWays = map[Method]string{Link: "TCX bpf_link", Netlink: "cls_bpf filter on clsact, netlink"}

func (tc) kinds(p Point) []Kind {
	var ks []Kind
	for m := range tcPaths {
		ks = append(ks, Kind{Point: p, Method: m})
	}
	return ks
}

// pinPrefix is <tcx|tc>_<direction>.
func (tc) pinPrefix(k Kind) string { return tcPinMethods[k.Method] + "_" + string(k.Direction) }

func (tc) describe(k Kind) (mode, how string) { return string(tcPaths[k.Method]), tcWays[k.Method] }

// free accepts every interface: TC programs share the hook.
func (tc) free(*Interface) error { return nil }

// clsactMarker is the directory that records, beside the pins, that we
// created the clsact qdisc of an interface, so that we delete it once our
// filter is gone and no other filter uses it, and never otherwise.
func (a *Attachment) clsactMarker(dir string) string {
	return filepath.Join(LinksDir(dir), fmt.Sprintf("clsact_%d_%d", a.netns, a.Ifindex))
}

func (h tc) attach(dir string, ifc *Interface, p Point, prog *ebpf.Program, o Options) (*Attachment, error) {
	path := o.TC
	if !forced(path) {
		tcx, err := has(kernel.TCX)
		if err != nil {
			return nil, err
		}
		path = Clsact
		if tcx {
			path = TCX
		}
	}
	method, err := path.method()
	if err != nil {
		return nil, err
	}
	a := newAttachment(dir, ifc, Kind{Point: p, Method: method})
	if method == Link {
		if err := a.attachTCX(h, prog); err != nil {
			return nil, fmt.Errorf("attach to the %s of %s with TCX: %w", p.Direction, ifc.Name, err)
		}
		return a, nil
	}
	if err := a.attachClsact(h, dir, ifc, prog); err != nil {
		return nil, fmt.Errorf("attach to the %s of %s with a cls_bpf filter: %w", p.Direction, ifc.Name, err)
	}
	return a, nil
}

// method returns the method of the TC path p.
func (p TCPath) method() (Method, error) {
	for m, q := range tcPaths {
		if q == p {
			return m, nil
		}
	}
	return "", fmt.Errorf("no TC path %q", p)
}

// attachTCX attaches with a TCX link, last of the interface's programs at
// h, then pins the link.
func (a *Attachment) attachTCX(h tc, prog *ebpf.Program) error {
	l, err := link.AttachTCX(link.TCXOptions{Program: prog, Interface: a.Ifindex, Attach: h.tcx})
	if err != nil {
		return err
	}
	return a.pinLink(l)
}

// attachClsact pins the program, creates the clsact qdisc if the interface
// has none (recording that it is ours first), then adds our filter at h
// (crash steps: internal/pindir/doc.go).
func (a *Attachment) attachClsact(h tc, dir string, ifc *Interface, prog *ebpf.Program) (err error) {
	if err := a.pinProgram(prog); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			h.tidy(a, dir)
			os.Remove(a.pin)
		}
	}()
	has, err := hasClsact(ifc.link)
	if err != nil {
		return err
	}
	if !has {
		if err := os.Mkdir(a.clsactMarker(dir), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("record the clsact qdisc: %w", err)
		}
		if err := netlink.QdiscAdd(clsact(ifc.Index)); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add a clsact qdisc: %w", err)
		}
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: ifc.Index, Parent: h.parent,
			Priority: filterPriority, Protocol: unix.ETH_P_ALL},
		Fd: prog.FD(), Name: "traffic_meter", DirectAction: true,
	}
	if err := netlink.FilterAdd(f); err != nil {
		return fmt.Errorf("add the filter (priority %d): %w", filterPriority, err)
	}
	return nil
}

func clsact(ifindex int) netlink.Qdisc {
	return &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex,
		Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
}

// hasClsact reports whether an interface has a clsact qdisc.
func hasClsact(l netlink.Link) (bool, error) {
	qs, err := netlink.QdiscList(l)
	if err != nil {
		return false, fmt.Errorf("list the qdiscs of %s: %w", l.Attrs().Name, err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return true, nil
		}
	}
	return false, nil
}

// ourFilters returns the filters of the interface of a at h that run the
// program of a.
func (h tc) ourFilters(a *Attachment) ([]netlink.Filter, error) {
	l, err := netlink.LinkByIndex(a.Ifindex)
	if err != nil {
		return nil, err
	}
	fs, err := netlink.FilterList(l, h.parent)
	if err != nil {
		return nil, fmt.Errorf("list the %s filters of %s: %w", a.Direction, l.Attrs().Name, err)
	}
	var ours []netlink.Filter
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok && ebpf.ProgramID(b.Id) == a.ProgID {
			ours = append(ours, f)
		}
	}
	return ours, nil
}

// tidy deletes the clsact qdisc we created on a's interface if no filter
// uses it any more, in either direction, and forgets that we created it
// once the qdisc is gone or no filter of ours in the other direction
// remains to be unloaded.
// It runs in the interface's network namespace; the marker goes even when
// that namespace is gone.
func (tc) tidy(a *Attachment, dir string) {
	marker := a.clsactMarker(dir)
	if a.Method != Netlink {
		return
	}
	if _, err := os.Stat(marker); err != nil {
		return
	}
	deleted := false
	inNetns(a.netns, func() error {
		l, err := netlink.LinkByIndex(a.Ifindex)
		if err != nil {
			return nil
		}
		in, err1 := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
		out, err2 := netlink.FilterList(l, netlink.HANDLE_MIN_EGRESS)
		if err1 == nil && err2 == nil && len(in) == 0 && len(out) == 0 {
			if netlink.QdiscDel(clsact(a.Ifindex)) == nil {
				deleted = true
			}
		}
		return nil
	})
	// Our filter in the other direction still uses the qdisc: the marker
	// stays for its unload.
	if deleted || !a.clsactSibling(dir) {
		os.Remove(marker)
	}
}

// clsactSibling reports whether dir holds the pin of our clsact filter in
// the other direction on a's interface.
func (a *Attachment) clsactSibling(dir string) bool {
	for p, h := range points {
		if p.Hook != TC || p.Direction == a.Direction {
			continue
		}
		k := Kind{Point: p, Method: Netlink}
		m, _ := filepath.Glob(filepath.Join(LinksDir(dir), fmt.Sprintf("%s_%d_%d_*", h.pinPrefix(k), a.netns, a.Ifindex)))
		if len(m) > 0 {
			return true
		}
	}
	return false
}

func (h tc) detach(a *Attachment) error {
	if a.Method == Link {
		if err := a.detachLink(); err != nil {
			return fmt.Errorf("detach from the %s of %s: %w", a.Direction, a.Ifname, err)
		}
		return nil
	}
	_, err := inNetns(a.netns, func() error {
		fs, err := h.ourFilters(a)
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil // the interface is gone, and our filter with it
		}
		if err != nil {
			return err
		}
		for _, f := range fs {
			if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete the %s filter of %s: %w", a.Direction, a.Ifname, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	h.tidy(a, filepath.Dir(filepath.Dir(a.pin)))
	return nil
}

func (h tc) check(a *Attachment) (live bool, err error) {
	if a.Method == Link {
		info, err := a.linkInfo()
		if err != nil {
			return false, err
		}
		if x := info.TCX(); x == nil || x.Ifindex == 0 {
			return false, nil // the interface was deleted, or the link detached
		}
		inNetns(a.netns, func() error {
			if l, err := netlink.LinkByIndex(a.Ifindex); err == nil {
				a.Ifname = l.Attrs().Name
			}
			return nil
		})
		return true, nil
	}
	if err := a.readProgID(); err != nil {
		return false, err
	}
	found, err := inNetns(a.netns, func() error {
		fs, err := h.ourFilters(a)
		var nf netlink.LinkNotFoundError
		switch {
		case errors.As(err, &nf) || errors.Is(err, unix.ENODEV):
			live = false // the interface is gone
		case err != nil:
			return err
		default:
			// No filter of ours: removed by someone else, or a kill came
			// between the pin and the filter.
			live = len(fs) > 0
			if l, err := netlink.LinkByIndex(a.Ifindex); err == nil {
				a.Ifname = l.Attrs().Name
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, unix.EPERM):
		// Not allowed into the namespace (an exporter without
		// CAP_SYS_ADMIN): trust the pin, as the XDP hook does.
		return true, nil
	case !found:
		return false, err // the namespace is gone, and its interfaces with it
	}
	return live, err
}
