package attach

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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
			return nil, &NoInterfaceError{Name: name}
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

// netnsInode returns the inode of the network namespace file at path, such
// as /proc/thread-self/ns/net for the calling thread's.
func netnsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("find the network namespace: %w", err)
	}
	return st.Ino, nil
}

// inNetns runs fn in the network namespace whose inode is ino: in the
// calling thread when it is there already, else on a thread of its own
// that enters the namespace. found is false, and fn is not run, when no
// such namespace exists any more (nothing names it: no file under
// /run/netns and no process in it).
func inNetns(ino uint64, fn func() error) (found bool, err error) {
	self, err := netnsInode("/proc/thread-self/ns/net")
	if err != nil {
		return false, err
	}
	if self == ino {
		return true, fn()
	}
	path := findNetns(ino)
	if path == "" {
		return false, nil
	}
	ns, err := os.Open(path)
	if err != nil {
		return false, nil // it went away meanwhile
	}
	defer ns.Close()
	done := make(chan error)
	go func() {
		// The thread is never unlocked: it ends with the goroutine, so
		// that no other goroutine runs in the namespace it entered.
		runtime.LockOSThread()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter network namespace %d: %w", ino, err)
			return
		}
		done <- fn()
	}()
	return true, <-done
}

// findNetns returns a file that names the network namespace whose inode is
// ino, or "" if there is none: a namespace of `ip netns`, or that of a
// process.
func findNetns(ino uint64) string {
	for _, pattern := range []string{"/run/netns/*", "/var/run/netns/*", "/proc/[0-9]*/ns/net"} {
		paths, _ := filepath.Glob(pattern)
		for _, p := range paths {
			if i, err := netnsInode(p); err == nil && i == ino {
				return p
			}
		}
	}
	return ""
}

// InCallerNetns reports whether the attachment's interface is in the
// calling thread's network namespace.
func (a *Attachment) InCallerNetns() bool {
	ns, err := netnsInode("/proc/thread-self/ns/net")
	return err == nil && ns == a.netns
}

// Netns returns the inode number of the network namespace of the
// attachment's interface, as `ls -iL /proc/PID/ns/net` shows it.
func (a *Attachment) Netns() uint64 { return a.netns }

// Where names the attachment's interface for people: its name, and its
// network namespace when that is not the caller's.
func (a *Attachment) Where() string {
	if a.InCallerNetns() {
		return a.Ifname
	}
	return fmt.Sprintf("%s (network namespace %d)", a.Ifname, a.netns)
}

// NoInterfaceError is an interface name that the caller's network
// namespace does not have.
type NoInterfaceError struct{ Name string }

func (e *NoInterfaceError) Error() string {
	return fmt.Sprintf("no interface %q in this network namespace", e.Name)
}
