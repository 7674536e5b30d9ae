// Package attach attaches traffic_meter's programs to network interfaces
// and keeps track of where they are attached.
//
// An attachment is of a kind (Kind, kind.go): an attach point (Point),
// that is a hook (XDP or TC) and the direction of the traffic the program
// sees there, and how the program is attached there: with a bpf_link or
// through netlink and, for XDP, in native or generic mode. The code of
// each hook is in a file of its own (xdp.go, tc.go) behind the interface
// hook, and the table points says which hook serves each attach point:
// adding an attach point is a row of that table, and a file when its hook
// is new. Every attachment is pinned, under a name that records its kind
// and interface (pins.go). Attach and Detach, here, dispatch on the kind.
package attach

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf"
)

// Auto is the value of Options.Mode, Options.Method and Options.TC that
// leaves the choice to Attach, as their empty value does.
const Auto = "auto"

// Options say how to attach.
type Options struct {
	// Mode forces an XDP mode. When Auto, native mode is tried first and
	// generic mode is the fallback.
	Mode Mode
	// Method forces an XDP attach method. When Auto, it is a bpf_link
	// where the kernel has XDP bpf_links (kernel.Probe), else netlink.
	Method Method
	// TC forces a TC path. When Auto, it is TCX where the kernel has it
	// (kernel.Probe), else clsact.
	TC TCPath
	// Notice is told about each fallback taken.
	Notice func(string)
}

// forced reports whether an option forces a choice: it is neither Auto
// nor empty.
func forced[T ~string](option T) bool { return option != Auto && option != "" }

func (o Options) notice(s string) {
	if o.Notice != nil {
		o.Notice(s)
	}
}

// CheckFree returns an error if ifc cannot take our program at p, such as
// the XDP hook of an interface that carries another XDP program.
func (ifc *Interface) CheckFree(p Point) error {
	h, err := hookAt(p)
	if err != nil {
		return err
	}
	return h.free(ifc)
}

// Attach attaches prog to ifc at p and pins the attachment in dir. It
// refuses an interface that cannot take it there (CheckFree).
func Attach(dir string, ifc *Interface, p Point, prog *ebpf.Program, o Options) (*Attachment, error) {
	h, err := hookAt(p)
	if err != nil {
		return nil, err
	}
	if err := h.free(ifc); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(LinksDir(dir), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", LinksDir(dir), err)
	}
	return h.attach(dir, ifc, p, prog, o)
}

// hookAt returns the hook that serves p.
func hookAt(p Point) (hook, error) {
	h, ok := points[p]
	if !ok {
		return nil, fmt.Errorf("no program attaches to %s %s", p.Hook, p.Direction)
	}
	return h, nil
}

// Detach detaches the program from the interface of a, in whichever
// network namespace the interface is, and then removes its pin (crash
// steps: internal/pindir/doc.go).
func Detach(a *Attachment) error {
	if err := a.hook().detach(a); err != nil {
		return err
	}
	return a.unpin()
}
