package attach

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/uapi"
)

// Adopt finds the XDP programs on the interfaces of the caller's network
// namespace that use one of the maps mapIDs, so count into the set pinned
// in dir, but have no pin there (an older traffic_meter could leave one,
// killed between attaching through netlink and pinning), and pins each as
// a netlink attachment, so that status, unload and unload --all see it.
// It returns what it adopted. The caller must hold the exclusive lock.
func Adopt(dir string, mapIDs []ebpf.MapID) ([]Attachment, error) {
	pinned, err := List(dir)
	if err != nil {
		return nil, err
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list the interfaces: %w", err)
	}
	ns, err := netnsInode("/proc/thread-self/ns/net")
	if err != nil {
		return nil, err
	}
	var adopted []Attachment
	for _, l := range links {
		x := l.Attrs().Xdp
		if x == nil || !x.Attached || slices.ContainsFunc(pinned, func(a Attachment) bool { return a.ProgID == ebpf.ProgramID(x.ProgId) }) {
			continue
		}
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId))
		if err != nil {
			continue // detached meanwhile, or not ours to open
		}
		a, err := adopt(dir, p, l, ns, mapIDs)
		p.Close()
		if err != nil {
			return adopted, err
		}
		if a != nil {
			adopted = append(adopted, *a)
		}
	}
	return adopted, nil
}

// xdpAttachedSKB is the kernel's XDP_ATTACHED_SKB: a program attached in
// generic mode.
const xdpAttachedSKB = uapi.XDPAttachedSKB

// adopt pins p, attached to l, if it uses one of mapIDs.
func adopt(dir string, p *ebpf.Program, l netlink.Link, ns uint64, mapIDs []ebpf.MapID) (*Attachment, error) {
	info, err := p.Info()
	if err != nil {
		return nil, err
	}
	ids, _ := info.MapIDs()
	if !slices.ContainsFunc(ids, func(id ebpf.MapID) bool { return slices.Contains(mapIDs, id) }) {
		return nil, nil
	}
	mode := Native
	if l.Attrs().Xdp.AttachMode == xdpAttachedSKB {
		mode = Generic
	}
	a := &Attachment{Ifname: l.Attrs().Name, Ifindex: l.Attrs().Index, Kind: Kind{Point: Point{XDP, Ingress}, Method: Netlink, Mode: mode}, netns: ns}
	a.ProgID, _ = info.ID()
	a.pin = filepath.Join(LinksDir(dir), a.pinName())
	if err := p.Pin(a.pin); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("pin the program on %s: %w", a.Ifname, err)
	}
	return a, nil
}
