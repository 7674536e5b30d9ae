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
)

// Every attachment is pinned in the links subdirectory of the pin
// directory, so that it outlives the command that made it and so that any
// later command, in any network namespace, knows which interfaces are
// loaded. An attachment with a bpf_link pins the link itself, and
// removing the pin detaches the program; one made through netlink pins
// the program, to remember it.
//
// A pin's name records the kind of the attachment and its interface:
//
//	<prefix>_<netns inode>_<ifindex>_<ifname>
//
// where the prefix is the hook's (see pinPrefix in xdp.go and tc.go):
//
//	<link|prog>_<native|generic>	XDP, with a link or through netlink
//	<tcx|tc>_<direction>		TC, with a TCX link or a clsact filter
//
// and every "." of the interface name is written as ":" (bpffs reserves
// dots in names; interface names never hold colons). Interface indexes
// are only unique within a network namespace, hence the namespace's
// inode.

// Attachment is the program attached to one interface.
type Attachment struct {
	// Ifname is the interface's name: its current name when it is in the
	// caller's network namespace, else its name when it was loaded.
	Ifname string
	// Ifindex is the interface's index in its network namespace.
	Ifindex int
	// Kind is where and how the program is attached.
	Kind
	// ProgID is the attached program's ID.
	ProgID ebpf.ProgramID

	netns uint64 // inode of the interface's network namespace
	pin   string // path of the pin
}

// Is reports whether a is an attachment to ifc.
func (a *Attachment) Is(ifc *Interface) bool { return a.netns == ifc.netns && a.Ifindex == ifc.Index }

// LinksDir returns the directory of the attachment pins in the pin
// directory dir.
func LinksDir(dir string) string { return filepath.Join(dir, "links") }

// newAttachment returns an attachment of kind k to ifc, with its pin in
// dir.
func newAttachment(dir string, ifc *Interface, k Kind) *Attachment {
	a := &Attachment{Ifname: ifc.Name, Ifindex: ifc.Index, Kind: k, netns: ifc.netns}
	a.pin = filepath.Join(LinksDir(dir), a.pinName())
	return a
}

// pinName names the pin of an attachment.
func (a *Attachment) pinName() string {
	return fmt.Sprintf("%s_%d_%d_%s", a.hook().pinPrefix(a.Kind), a.netns, a.Ifindex, strings.ReplaceAll(a.Ifname, ".", ":"))
}

// parsePin reads an attachment back from its pin's name.
func parsePin(name string) (*Attachment, bool) {
	for p, h := range points {
		for _, k := range h.kinds(p) {
			if tail, ok := strings.CutPrefix(name, h.pinPrefix(k)+"_"); ok {
				a := &Attachment{Kind: k}
				return a, a.parsePinTail(tail)
			}
		}
	}
	return nil, false
}

// parsePinTail reads the end of a pin's name, where the interface is, into
// a.
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

// Find returns the attachment of the program pinned in dir to ifc in
// direction d, or nil.
func Find(dir string, ifc *Interface, d Direction) (*Attachment, error) {
	all, err := List(dir)
	if err != nil {
		return nil, err
	}
	for _, a := range all {
		if a.Is(ifc) && a.Direction == d {
			return &a, nil
		}
	}
	return nil, nil
}

// List returns the attachments of the program pinned in dir that are still
// there, leaving the pins of those that are gone (deleted interfaces) for
// Prune. It changes nothing: readers call it under the shared lock.
func List(dir string) ([]Attachment, error) {
	live, _, err := scan(dir)
	return live, err
}

// Prune removes the pins of attachments that are gone (their interface, or
// our program on it), and what they leave beside them, and returns those
// attachments. The caller must hold the pin directory's exclusive lock.
func Prune(dir string) ([]Attachment, error) {
	_, stale, err := scan(dir)
	if err != nil {
		return nil, err
	}
	for _, a := range stale {
		a.hook().tidy(&a, dir)
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
		ok, err := a.hook().check(a)
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

// pinLink pins the new link l of a and closes it (crash steps:
// internal/pindir/doc.go).
func (a *Attachment) pinLink(l link.Link) error {
	defer l.Close()
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

// pinProgram fills in a's program ID and pins prog, before a netlink
// attach (crash steps: internal/pindir/doc.go).
func (a *Attachment) pinProgram(prog *ebpf.Program) error {
	info, err := prog.Info()
	if err != nil {
		return err
	}
	a.ProgID, _ = info.ID()
	// Pin a clone: pinning prog itself would move a pin it already has
	// (the same program attached in the other direction).
	c, err := prog.Clone()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Pin(a.pin); err != nil {
		return fmt.Errorf("pin the program: %w", err)
	}
	return nil
}

// detachLink detaches the pinned link of a, if it is still pinned.
// Removing the pin would destroy the link, and detach it, only later, from
// a kernel work queue: detach it now.
func (a *Attachment) detachLink() error {
	l, err := link.LoadPinnedLink(a.pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil // unpinned already: detached
	}
	if err != nil {
		return fmt.Errorf("open the link pinned at %s: %w", a.pin, err)
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

// describeProgram names a program by its ID: "name (id N)".
func describeProgram(id ebpf.ProgramID) string {
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
