// Package attach attaches traffic_meter's programs to network interfaces,
// XDP for what they receive and TC for what they send (tc.go), and keeps
// track of where they are attached.
//
// Every attachment is pinned in the links subdirectory of the pin directory,
// so that it outlives the command that made it and so that any later
// command, in any network namespace, knows which interfaces are loaded. On
// kernels with XDP bpf_links (Linux 5.9) the pin is the link itself, and
// removing it detaches the program. On older kernels the program is
// attached through netlink and the program is pinned, to remember it.
//
// A pin's name records how and where the program was attached:
//
//	<link|prog>_<mode>_<netns inode>_<ifindex>_<ifname>
//
// for XDP, and for TC egress (tc.go)
//
//	<tcx|tc>_egress_<netns inode>_<ifindex>_<ifname>
//
// with every "." of the interface name written as ":" (bpffs reserves dots
// in names; interface names never hold colons). Interface indexes are only
// unique within a network namespace, hence the namespace's inode.
package attach

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/kernel"
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

// Attachment is the program attached to one interface.
type Attachment struct {
	// Ifname is the interface's name: its current name when it is in the
	// caller's network namespace, else its name when it was loaded.
	Ifname string
	// Ifindex is the interface's index in its network namespace.
	Ifindex int
	// Mode is the XDP mode the program was attached in.
	Mode Mode
	// ProgID is the attached program's ID.
	ProgID ebpf.ProgramID
	// Netlink says that the program was attached through netlink rather
	// than with a pinned bpf_link.
	Netlink bool
	// Direction is the traffic counted: ingress with XDP, egress with TC.
	Direction Direction
	// TC is how an egress program is attached.
	TC TCPath

	netns uint64 // inode of the interface's network namespace
	pin   string // path of the pin
}

// LinksDir returns the directory of the attachment pins in the pin
// directory dir.
func LinksDir(dir string) string { return filepath.Join(dir, "links") }

// Interface is a network interface of the caller's network namespace.
type Interface struct {
	Name  string
	Index int
	// XDPProg is the ID of the XDP program the interface carries, if any.
	XDPProg ebpf.ProgramID

	netns uint64
	link  netlink.Link
}

// LookupInterface finds an interface by name in the caller's network
// namespace.
func LookupInterface(name string) (*Interface, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("no interface %q in this network namespace: check the name with 'ip link'", name)
		}
		return nil, fmt.Errorf("look up interface %q: %w", name, err)
	}
	ns, err := netnsInode("/proc/thread-self/ns/net")
	if err != nil {
		return nil, err
	}
	ifc := &Interface{Name: name, Index: l.Attrs().Index, netns: ns, link: l}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		ifc.XDPProg = ebpf.ProgramID(x.ProgId)
	}
	return ifc, nil
}

// CheckFree returns an error naming the XDP program the interface carries,
// if it carries one.
func (ifc *Interface) CheckFree() error {
	if ifc.XDPProg == 0 {
		return nil
	}
	return fmt.Errorf("interface %s already carries XDP program %s: detach it first with 'ip link set dev %s xdp off'", ifc.Name, describe(ifc.XDPProg), ifc.Name)
}

// Find returns the attachment of the program pinned in dir to ifc in
// direction d, or nil.
func Find(dir string, ifc *Interface, d Direction) (*Attachment, error) {
	all, err := List(dir)
	if err != nil {
		return nil, err
	}
	for _, a := range all {
		if a.netns == ifc.netns && a.Ifindex == ifc.Index && a.Direction == d {
			return &a, nil
		}
	}
	return nil, nil
}

// Method is a way of attaching a program to an interface.
type Method string

// The attach methods.
const (
	// Link attaches with a bpf_link (Linux 5.9), pinned.
	Link Method = "link"
	// Netlink attaches through netlink, the program pinned.
	Netlink Method = "netlink"
)

// Options say how to attach.
type Options struct {
	// Mode forces an XDP mode. When empty, native mode is tried first and
	// generic mode is the fallback.
	Mode Mode
	// Method forces an attach method. When empty, it is a bpf_link where
	// the kernel has XDP bpf_links (kernel.Probe), else netlink.
	Method Method
	// TC forces a TC path for egress. When empty, it is TCX where the
	// kernel has it (kernel.Probe), else clsact.
	TC TCPath
	// Notice is told about each fallback taken.
	Notice func(string)
}

// Attach attaches prog to ifc and pins the attachment in dir. It refuses an
// interface that carries an XDP program already.
func Attach(dir string, ifc *Interface, prog *ebpf.Program, o Options) (*Attachment, error) {
	if err := ifc.CheckFree(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(LinksDir(dir), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", LinksDir(dir), err)
	}
	modes := []Mode{Native, Generic}
	if o.Mode != "" {
		modes = []Mode{o.Mode}
	}
	useNetlink := o.Method == Netlink
	if o.Method == "" {
		f, err := kernel.Probe()
		if err != nil {
			return nil, err
		}
		useNetlink = !f.XDPLink
	}
	var err error
	for _, mode := range modes {
		a := &Attachment{Ifname: ifc.Name, Ifindex: ifc.Index, Mode: mode, Direction: Ingress, netns: ifc.netns}
		if useNetlink {
			err = a.attachNetlink(dir, ifc, prog)
		} else {
			err = a.attachLink(dir, prog)
		}
		if err == nil {
			return a, nil
		}
		if o.Mode == "" && mode == Native {
			o.notice(fmt.Sprintf("native XDP failed on %s (%v): using generic mode", ifc.Name, err))
		}
	}
	return nil, fmt.Errorf("attach to %s in %s mode: %w", ifc.Name, modes[len(modes)-1], err)
}

func (o Options) notice(s string) {
	if o.Notice != nil {
		o.Notice(s)
	}
}

// pinName names the pin of an attachment.
func (a *Attachment) pinName() string {
	if a.Direction == Egress {
		return a.tcPinName()
	}
	kind := "link"
	if a.Netlink {
		kind = "prog"
	}
	return fmt.Sprintf("%s_%s_%s", kind, a.Mode, a.pinTail())
}

// pinTail is the end of every pin's name: where the interface is.
func (a *Attachment) pinTail() string {
	return fmt.Sprintf("%d_%d_%s", a.netns, a.Ifindex, strings.ReplaceAll(a.Ifname, ".", ":"))
}

// parsePinTail reads the end of a pin's name (see pinTail) into a.
func (a *Attachment) parsePinTail(tail string) bool {
	f := strings.SplitN(tail, "_", 3)
	if len(f) != 3 {
		return false
	}
	ns, err1 := strconv.ParseUint(f[0], 10, 64)
	ifindex, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return false
	}
	a.netns, a.Ifindex, a.Ifname = ns, ifindex, strings.ReplaceAll(f[2], ":", ".")
	return true
}

// parsePin reads an attachment back from its pin's name.
func parsePin(name string) (*Attachment, bool) {
	if a, ok := parseTCPin(name); ok {
		return a, true
	}
	f := strings.SplitN(name, "_", 3)
	if len(f) != 3 || (f[0] != "link" && f[0] != "prog") || (f[1] != string(Native) && f[1] != string(Generic)) {
		return nil, false
	}
	a := &Attachment{Mode: Mode(f[1]), Netlink: f[0] == "prog", Direction: Ingress}
	return a, a.parsePinTail(f[2])
}

func (a *Attachment) attachLink(dir string, prog *ebpf.Program) error {
	flags := link.XDPDriverMode
	if a.Mode == Generic {
		flags = link.XDPGenericMode
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: a.Ifindex, Flags: flags})
	if err != nil {
		return err
	}
	return a.pinLink(dir, l)
}

// pinLink pins the new link l of a and closes it (crash steps:
// internal/pindir/doc.go).
func (a *Attachment) pinLink(dir string, l link.Link) error {
	defer l.Close()
	a.pin = filepath.Join(LinksDir(dir), a.pinName())
	if err := l.Pin(a.pin); err != nil {
		return fmt.Errorf("pin the link: %w", err)
	}
	info, err := l.Info()
	if err != nil {
		l.Unpin()
		return err
	}
	a.ProgID = info.Program
	return nil
}

// attachNetlink pins the program, then attaches it (crash steps:
// internal/pindir/doc.go).
func (a *Attachment) attachNetlink(dir string, ifc *Interface, prog *ebpf.Program) error {
	a.Netlink = true
	info, err := prog.Info()
	if err != nil {
		return err
	}
	id, _ := info.ID()
	a.ProgID = id
	a.pin = filepath.Join(LinksDir(dir), a.pinName())
	if err := prog.Pin(a.pin); err != nil {
		return fmt.Errorf("pin the program: %w", err)
	}
	if err := netlink.LinkSetXdpFdWithFlags(ifc.link, prog.FD(), unix.XDP_FLAGS_UPDATE_IF_NOEXIST|a.Mode.netlinkFlag()); err != nil {
		os.Remove(a.pin)
		return err
	}
	return nil
}

// netlinkFlag is the netlink XDP flag of the mode.
func (m Mode) netlinkFlag() int {
	if m == Generic {
		return unix.XDP_FLAGS_SKB_MODE
	}
	return unix.XDP_FLAGS_DRV_MODE
}

// Detach detaches the program from the interface of a, in whichever
// network namespace the interface is, and then removes its pin (crash
// steps: internal/pindir/doc.go).
func Detach(a *Attachment) error {
	if a.Direction == Egress {
		return detachTC(a)
	}
	if a.Netlink {
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
		if err != nil {
			return err
		}
	} else if err := a.detachLink(); err != nil {
		return fmt.Errorf("detach from %s: %w", a.Ifname, err)
	}
	return a.unpin()
}

// detachLink detaches the pinned link of a, if it is still pinned.
// Removing the pin would destroy the link, and detach it, only later, from
// a kernel work queue: detach it now.
func (a *Attachment) detachLink() error {
	l, err := link.LoadPinnedLink(a.pin, nil)
	if err != nil {
		return nil
	}
	defer l.Close()
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	return nil
}

// unpin removes the pin of a, if it is still there.
func (a *Attachment) unpin() error {
	if err := os.Remove(a.pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", a.pin, err)
	}
	return nil
}

// linkInfo opens the pinned link of a, fills in a's program ID and returns
// the link's information.
func (a *Attachment) linkInfo() (*link.Info, error) {
	l, err := link.LoadPinnedLink(a.pin, nil)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", a.pin, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return nil, err
	}
	a.ProgID = info.Program
	return info, nil
}

// readProgID opens the pinned program of a and fills in a's program ID.
func (a *Attachment) readProgID() error {
	p, err := ebpf.LoadPinnedProgram(a.pin, nil)
	if err != nil {
		return fmt.Errorf("open %s: %w", a.pin, err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return err
	}
	a.ProgID, _ = info.ID()
	return nil
}

// List returns the attachments of the program pinned in dir that are still
// there, leaving the pins of those that are gone (deleted interfaces) for
// Prune. It changes nothing: readers call it under the shared lock.
func List(dir string) ([]Attachment, error) {
	live, _, err := scan(dir)
	return live, err
}

// Prune removes the pins of attachments that are gone (their interface, or
// our program on it) and returns those attachments. The caller must hold
// the pin directory's exclusive lock.
func Prune(dir string) ([]Attachment, error) {
	_, stale, err := scan(dir)
	if err != nil {
		return nil, err
	}
	for _, a := range stale {
		a.tidyClsact(dir)
		if err := a.unpin(); err != nil {
			return nil, err
		}
	}
	return stale, nil
}

// scan reads the pins in dir and sorts them into live and stale
// attachments.
func scan(dir string) (live, stale []Attachment, err error) {
	entries, err := os.ReadDir(LinksDir(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", LinksDir(dir), err)
	}
	for _, e := range entries {
		a, ok := parsePin(e.Name())
		if !ok {
			continue
		}
		a.pin = filepath.Join(LinksDir(dir), e.Name())
		ok, err := a.check()
		switch {
		case errors.Is(err, os.ErrNotExist):
			// unloaded meanwhile, by a command holding the lock
		case err != nil:
			return nil, nil, err
		case ok:
			live = append(live, *a)
		default:
			stale = append(stale, *a)
		}
	}
	return live, stale, nil
}

// check fills in the program ID of a and the interface's current name, and
// reports whether the attachment is still there.
func (a *Attachment) check() (live bool, err error) {
	if a.Direction == Egress {
		return a.checkTC()
	}
	if a.Netlink {
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
			live = !a.Netlink || x != nil && x.Attached && ebpf.ProgramID(x.ProgId) == a.ProgID
		case errors.As(err, &nf) || errors.Is(err, unix.ENODEV):
			live = !a.Netlink // a link knows its interface is there
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

// describe names a program by its ID: "name (id N)".
func describe(id ebpf.ProgramID) string {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return fmt.Sprintf("(id %d)", id)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil || info.Name == "" {
		return fmt.Sprintf("(id %d)", id)
	}
	return fmt.Sprintf("%q (id %d)", info.Name, id)
}
