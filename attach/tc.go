package attach

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/kernel"
)

// Direction is the traffic an attachment counts.
type Direction string

// The directions.
const (
	// Ingress counts the frames an interface receives, with XDP.
	Ingress Direction = "ingress"
	// Egress counts the frames an interface sends, with TC.
	Egress Direction = "egress"
)

// TCPath is how a TC program is attached.
type TCPath string

// The TC paths.
const (
	// TCX attaches with a TCX bpf_link (Linux 6.6), pinned.
	TCX TCPath = "tcx"
	// Clsact attaches a direct-action cls_bpf filter to a clsact qdisc
	// through netlink, the program pinned.
	Clsact TCPath = "clsact"
)

// filterPriority is the priority of our cls_bpf filters on the egress hook
// of the clsact qdisc. The kernel picks each filter's handle, so that
// other filters, another pin directory's included, may share the priority;
// ours is found by its program's ID.
const filterPriority = 0xc7a6

// tcPinPrefix is how the pin names of TC attachments begin: the TCX link,
// or the program of the clsact filter.
var tcPinPrefix = map[TCPath]string{TCX: "tcx_egress_", Clsact: "tc_egress_"}

// tcPinName names the pin of an egress attachment:
//
//	<tcx|tc>_egress_<netns inode>_<ifindex>_<ifname>
func (a *Attachment) tcPinName() string {
	return tcPinPrefix[a.TC] + a.pinTail()
}

// parseTCPin reads an egress attachment back from its pin's name.
func parseTCPin(name string) (*Attachment, bool) {
	for path, prefix := range tcPinPrefix {
		if tail, ok := strings.CutPrefix(name, prefix); ok {
			a := &Attachment{Direction: Egress, TC: path, Netlink: path == Clsact}
			return a, a.parsePinTail(tail)
		}
	}
	return nil, false
}

// clsactMarker is the directory that records, beside the pins, that we
// created the clsact qdisc of an interface, so that we delete it once our
// filter is gone and no other filter uses it, and never otherwise.
func (a *Attachment) clsactMarker(dir string) string {
	return filepath.Join(LinksDir(dir), fmt.Sprintf("clsact_%d_%d", a.netns, a.Ifindex))
}

// AttachEgress attaches a TC program to the egress of ifc, after whatever
// other TC programs and filters it has, and pins the attachment in dir. It
// uses TCX where the kernel has it (kernel.Probe), else (or when o.TC says
// so) a clsact qdisc and a cls_bpf filter.
func AttachEgress(dir string, ifc *Interface, prog *ebpf.Program, o Options) (*Attachment, error) {
	if err := os.MkdirAll(LinksDir(dir), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", LinksDir(dir), err)
	}
	path := o.TC
	if path == "" {
		f, err := kernel.Probe()
		if err != nil {
			return nil, err
		}
		path = Clsact
		if f.TCX {
			path = TCX
		}
	}
	a := &Attachment{Ifname: ifc.Name, Ifindex: ifc.Index, Direction: Egress, TC: path, Netlink: path == Clsact, netns: ifc.netns}
	if path == TCX {
		if err := a.attachTCX(dir, prog); err != nil {
			return nil, fmt.Errorf("attach to the egress of %s with TCX: %w", ifc.Name, err)
		}
		return a, nil
	}
	if err := a.attachClsact(dir, ifc, prog); err != nil {
		return nil, fmt.Errorf("attach to the egress of %s with a cls_bpf filter: %w", ifc.Name, err)
	}
	return a, nil
}

// attachTCX attaches with a TCX link, last of the interface's egress
// programs, then pins the link.
func (a *Attachment) attachTCX(dir string, prog *ebpf.Program) error {
	l, err := link.AttachTCX(link.TCXOptions{Program: prog, Interface: a.Ifindex, Attach: ebpf.AttachTCXEgress})
	if err != nil {
		return err
	}
	return a.pinLink(dir, l)
}

// attachClsact pins the program, creates the clsact qdisc if the interface
// has none (recording that it is ours first), then adds our filter (crash
// steps: internal/pindir/doc.go).
func (a *Attachment) attachClsact(dir string, ifc *Interface, prog *ebpf.Program) (err error) {
	info, err := prog.Info()
	if err != nil {
		return err
	}
	a.ProgID, _ = info.ID()
	a.pin = filepath.Join(LinksDir(dir), a.tcPinName())
	if err := prog.Pin(a.pin); err != nil {
		return fmt.Errorf("pin the program: %w", err)
	}
	defer func() {
		if err != nil {
			a.tidyClsact(dir)
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
		FilterAttrs: netlink.FilterAttrs{LinkIndex: ifc.Index, Parent: netlink.HANDLE_MIN_EGRESS,
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

// ourFilters returns the egress filters of interface ifindex that run the
// program id.
func ourFilters(ifindex int, id ebpf.ProgramID) ([]netlink.Filter, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil, err
	}
	fs, err := netlink.FilterList(l, netlink.HANDLE_MIN_EGRESS)
	if err != nil {
		return nil, fmt.Errorf("list the egress filters of %s: %w", l.Attrs().Name, err)
	}
	var ours []netlink.Filter
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok && ebpf.ProgramID(b.Id) == id {
			ours = append(ours, f)
		}
	}
	return ours, nil
}

// tidyClsact deletes the clsact qdisc we created on a's interface if no
// filter uses it any more, and forgets that we created it. It runs in the
// interface's network namespace; the marker goes even when that namespace
// is gone.
func (a *Attachment) tidyClsact(dir string) {
	marker := a.clsactMarker(dir)
	if a.TC != Clsact {
		return
	}
	if _, err := os.Stat(marker); err != nil {
		return
	}
	inNetns(a.netns, func() error {
		l, err := netlink.LinkByIndex(a.Ifindex)
		if err != nil {
			return nil
		}
		in, err1 := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
		out, err2 := netlink.FilterList(l, netlink.HANDLE_MIN_EGRESS)
		if err1 == nil && err2 == nil && len(in) == 0 && len(out) == 0 {
			netlink.QdiscDel(clsact(a.Ifindex))
		}
		return nil
	})
	os.Remove(marker)
}

// detachTC detaches an egress attachment, in whichever network namespace
// its interface is, then removes its pin (crash steps:
// internal/pindir/doc.go).
func detachTC(a *Attachment) error {
	if a.TC == TCX {
		if err := a.detachLink(); err != nil {
			return fmt.Errorf("detach from the egress of %s: %w", a.Ifname, err)
		}
	} else {
		_, err := inNetns(a.netns, func() error {
			fs, err := ourFilters(a.Ifindex, a.ProgID)
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
				return nil // the interface is gone, and our filter with it
			}
			if err != nil {
				return err
			}
			for _, f := range fs {
				if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("delete the egress filter of %s: %w", a.Ifname, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		a.tidyClsact(filepath.Dir(filepath.Dir(a.pin)))
	}
	return a.unpin()
}

// checkTC is check for an egress attachment.
func (a *Attachment) checkTC() (live bool, err error) {
	if a.TC == TCX {
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
		fs, err := ourFilters(a.Ifindex, a.ProgID)
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
		// CAP_SYS_ADMIN): trust the pin, as check does.
		return true, nil
	case !found:
		return false, err // the namespace is gone, and its interfaces with it
	}
	return live, err
}
