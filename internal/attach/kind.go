package attach

import (
	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
)

// Hook is a kernel hook that programs attach to.
type Hook string

// The hooks.
const (
	// XDP runs the program on the frames an interface receives, before
	// (native mode) or as (generic mode) the kernel makes a socket
	// buffer of them.
	XDP Hook = "xdp"
	// TC runs the program on the socket buffers of the traffic control
	// layer.
	TC Hook = "tc"
)

// Direction is the traffic an attachment counts.
type Direction string

// The directions.
const (
	// Ingress counts the frames an interface receives.
	Ingress Direction = "ingress"
	// Egress counts the frames an interface sends.
	Egress Direction = "egress"
)

// Point is an attach point: a hook, and the direction of the traffic the
// program sees there.
type Point struct {
	Hook      Hook
	Direction Direction
}

// Method is a way of attaching a program to an interface.
type Method string

// The attach methods.
const (
	// Link attaches with a bpf_link, pinned: at XDP an XDP link (Linux
	// 5.9), at TC a TCX link (Linux 6.6).
	Link Method = "link"
	// Netlink attaches through netlink, the program pinned: at TC, as a
	// cls_bpf filter on a clsact qdisc.
	Netlink Method = "netlink"
)

// methods are the attach methods, as Description spells them.
var methods = map[Method]string{Link: "bpf_link", Netlink: "netlink"}

// Kind is the kind of an attachment: where the program is attached, and
// how.
type Kind struct {
	Point
	// Method is how the program is attached.
	Method Method
	// Mode is the XDP mode, at the XDP hook; empty at the others.
	Mode Mode
}

// hook is the code that attaches programs at a hook, and finds and
// detaches them again (xdp.go, tc.go).
type hook interface {
	// kinds lists the kinds of attachment at p.
	kinds(p Point) []Kind
	// pinPrefix is how the names of the pins of kind k begin (pins.go).
	pinPrefix(k Kind) string
	// describe returns the mode of an attachment of kind k and how it is
	// made, in words (see Description).
	describe(k Kind) (mode, how string)
	// free returns an error if ifc cannot take our program at the hook.
	free(ifc *Interface) error
	// attach attaches prog to ifc at p, in the way that o asks for or
	// else the best the kernel has, and pins the attachment in dir,
	// whose links directory exists.
	attach(dir string, ifc *Interface, p Point, prog *ebpf.Program, o Options) (*Attachment, error)
	// detach detaches the program of a, in whichever network namespace
	// its interface is, and leaves its pin.
	detach(a *Attachment) error
	// check fills in the program ID of a and its interface's current
	// name, and reports whether the attachment is still there.
	check(a *Attachment) (live bool, err error)
	// tidy removes what an attachment that is gone leaves beside its pin
	// in dir.
	tidy(a *Attachment, dir string)
}

// points is the hook that serves each attach point.
var points = map[Point]hook{
	{XDP, Ingress}: xdp{},
	{TC, Ingress}:  tc{tcx: ebpf.AttachTCXIngress, parent: netlink.HANDLE_MIN_INGRESS},
	{TC, Egress}:   tc{tcx: ebpf.AttachTCXEgress, parent: netlink.HANDLE_MIN_EGRESS},
}

// hook returns the code of the attach point of k.
func (k Kind) hook() hook { return points[k.Point] }

// Description says how an attachment is made, in the words that load,
// status, the --watch header and the exporter show.
type Description struct {
	// Direction is "ingress" or "egress".
	Direction string
	// Hook is "xdp" or "tc".
	Hook string
	// Mode is the XDP mode, "native" or "generic", or the TC path,
	// "tcx" or "clsact".
	Mode string
	// Method is "bpf_link" or "netlink".
	Method string
	// how is the hook's way of attaching, in words, such as "native
	// mode, bpf_link" or "cls_bpf filter on clsact, netlink".
	how string
}

// Describe describes an attachment of kind k.
func (k Kind) Describe() Description {
	mode, how := k.hook().describe(k)
	return Description{Direction: string(k.Direction), Hook: string(k.Hook), Mode: mode, Method: methods[k.Method], how: how}
}

// String is the direction and how the attachment is made, such as
// "ingress, native mode, bpf_link" or "egress, TCX bpf_link".
func (d Description) String() string { return d.Direction + ", " + d.how }

// Short is the direction, the hook and the mode, such as "ingress, xdp
// native" or "ingress, tc tcx".
func (d Description) Short() string { return d.Direction + ", " + d.Hook + " " + d.Mode }

// has probes the kernel (once per process: kernel.Probe) for ft, which
// decides an automatic choice of method.
func has(ft *kernel.Feature) (bool, error) {
	f, err := kernel.Probe()
	if err != nil {
		return false, err
	}
	return ft.Has(f), nil
}
