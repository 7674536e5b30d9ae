package attach

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
)

// Mode is an XDP attach mode.
type Mode string

// The XDP attach modes.
const (
	// Native runs the program in the driver, before the kernel allocates
	// a socket buffer.
	Native Mode = "native"
	// Generic (SKB mode) runs the program later in the receive path, on
	// any interface.
	Generic Mode = "generic"
)

// modes are the XDP modes, in the order Attach tries them.
var modes = []Mode{Native, Generic}

// netlinkFlag is the netlink XDP flag of the mode.
func (m Mode) netlinkFlag() int {
	if m == Generic {
		return unix.XDP_FLAGS_SKB_MODE
	}
	return unix.XDP_FLAGS_DRV_MODE
}

// xdp is the XDP hook, which sees the frames an interface receives. An
// interface has one XDP program (without a dispatcher such as libxdp's),
// so it must not carry another one.
type xdp struct{}

// xdpPinMethods begin the names of XDP pins: a link, or the program.
var xdpPinMethods = map[Method]string{Link: "link", Netlink: "prog"}

func (xdp) kinds(p Point) []Kind {
	var ks []Kind
	for m := range xdpPinMethods {
		for _, mode := range modes {
			ks = append(ks, Kind{Point: p, Method: m, Mode: mode})
		}
	}
	return ks
}

// pinPrefix is <link|prog>_<mode>.
func (xdp) pinPrefix(k Kind) string { return xdpPinMethods[k.Method] + "_" + string(k.Mode) }

func (xdp) describe(k Kind) (mode, how string) {
	return string(k.Mode), fmt.Sprintf("%s mode, %s", k.Mode, methods[k.Method])
}

// free returns an error naming the XDP program ifc carries, if it carries
// one.
func (xdp) free(ifc *Interface) error {
	if ifc.XDPProg == 0 {
		return nil
	}
	return &ForeignXDPError{Ifname: ifc.Name, Program: describeProgram(ifc.XDPProg)}
}

func (xdp) attach(dir string, ifc *Interface, p Point, prog *ebpf.Program, o Options) (*Attachment, error) {
	try := modes
	if forced(o.Mode) {
		try = []Mode{o.Mode}
	}
	method := o.Method
	if !forced(method) {
		haveLink, err := has(kernel.XDPLink)
		if err != nil {
			return nil, err
		}
		method = Netlink
		if haveLink {
			method = Link
		}
	}
	var err error
	for _, mode := range try {
		a := newAttachment(dir, ifc, Kind{Point: p, Method: method, Mode: mode})
		if method == Netlink {
			err = a.attachXDPNetlink(ifc, prog)
		} else {
			err = a.attachXDPLink(prog)
		}
		if err == nil {
			return a, nil
		}
		if !forced(o.Mode) && mode == Native {
			o.notice(fmt.Sprintf("native XDP failed on %s (%v): using generic mode", ifc.Name, err))
		}
	}
	return nil, fmt.Errorf("attach to %s in %s mode: %w", ifc.Name, try[len(try)-1], err)
}

// attachXDPLink attaches with an XDP link, then pins the link.
func (a *Attachment) attachXDPLink(prog *ebpf.Program) error {
	flags := link.XDPDriverMode
	if a.Mode == Generic {
		flags = link.XDPGenericMode
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: a.Ifindex, Flags: flags})
	if err != nil {
		return err
	}
	return a.pinLink(l)
}

// attachXDPNetlink pins the program, then attaches it through netlink.
func (a *Attachment) attachXDPNetlink(ifc *Interface, prog *ebpf.Program) error {
	if err := a.pinProgram(prog); err != nil {
		return err
	}
	if err := netlink.LinkSetXdpFdWithFlags(ifc.link, prog.FD(), unix.XDP_FLAGS_UPDATE_IF_NOEXIST|a.Mode.netlinkFlag()); err != nil {
		os.Remove(a.pin)
		return err
	}
	return nil
}

func (xdp) detach(a *Attachment) error {
	if a.Method == Link {
		if err := a.detachLink(); err != nil {
			return fmt.Errorf("detach from %s: %w", a.Ifname, err)
		}
		return nil
	}
	_, err := inNetns(a.netns, func() error {
		l, err := netlink.LinkByIndex(a.Ifindex)
		if err != nil || l.Attrs().Xdp == nil || ebpf.ProgramID(l.Attrs().Xdp.ProgId) != a.ProgID {
			return nil // the interface, or our program on it, is gone
		}
		if err := netlink.LinkSetXdpFdWithFlags(l, -1, a.Mode.netlinkFlag()); err != nil {
			return fmt.Errorf("detach from %s: %w", a.Ifname, err)
		}
		return nil
	})
	return err
}

func (xdp) check(a *Attachment) (live bool, err error) {
	byNetlink := a.Method == Netlink
	if byNetlink {
		if err := a.readProgID(); err != nil {
			return false, err
		}
	} else {
		info, err := a.linkInfo()
		if err != nil {
			return false, err
		}
		if x := info.XDP(); x == nil || x.Ifindex == 0 {
			return false, nil // the interface was deleted, or the link detached
		}
	}
	found, err := inNetns(a.netns, func() error {
		l, err := netlink.LinkByIndex(a.Ifindex)
		var nf netlink.LinkNotFoundError
		switch {
		case err == nil:
			a.Ifname = l.Attrs().Name
			x := l.Attrs().Xdp
			live = !byNetlink || x != nil && x.Attached && ebpf.ProgramID(x.ProgId) == a.ProgID
		case errors.As(err, &nf) || errors.Is(err, unix.ENODEV):
			live = !byNetlink // a link knows its interface is there
		default:
			return fmt.Errorf("look up interface %d: %w", a.Ifindex, err)
		}
		return nil
	})
	switch {
	case errors.Is(err, unix.EPERM):
		// Not allowed into the namespace (an exporter without
		// CAP_SYS_ADMIN): trust the pin.
		return true, nil
	case !found:
		// The namespace is gone, and its interfaces with it.
		return false, err
	}
	return live, err
}

// tidy has nothing to do: an XDP attachment leaves nothing but its pin.
func (xdp) tidy(*Attachment, string) {}

// ForeignXDPError is an interface that carries an XDP program that is not
// ours: Program names it.
type ForeignXDPError struct{ Ifname, Program string }

func (e *ForeignXDPError) Error() string {
	return fmt.Sprintf("interface %s already carries XDP program %s", e.Ifname, e.Program)
}
