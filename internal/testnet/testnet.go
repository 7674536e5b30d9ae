// Package testnet gives tests a throwaway pair of network namespaces joined
// by a veth pair, and a way to send raw Ethernet frames across it. Every
// namespace and interface it makes has a unique name and is removed when
// the test ends, failed or not. Nothing touches the machine's own
// interfaces, and frames never leave the pair.
package testnet

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
)

// RequireRoot skips a test that needs root, or fails it when CI=true so
// that privileged tests never silently skip in CI. As root it probes the
// kernel once (kernel.Probe, which lifts RLIMIT_MEMLOCK where the kernel
// charges BPF maps to it) and fails the test if the kernel cannot run
// traffic_meter.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root")
	}
	if _, err := kernel.Probe(); err != nil {
		t.Fatal(err)
	}
}

// Unavailable skips a test that cannot run here, or fails it when CI=true.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot run in CI: %s", why)
	}
	t.Skip(why)
}

var seq atomic.Int32

// Pair is two network namespaces joined by a veth pair: Dev[0] in NS[0]
// (where a program is loaded) and Dev[1] in NS[1] (where frames are sent).
type Pair struct {
	NS  [2]string
	Dev [2]string
	// IPv4 and IPv6 are the addresses of Dev[0] and Dev[1] in a pair made
	// by NewAddressedPair; invalid otherwise.
	IPv4, IPv6 [2]netip.Addr
}

// The addresses NewAddressedPair gives Dev[0] and Dev[1].
var (
	addrs4 = [2]netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}
	addrs6 = [2]netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")}
	macs   = [2]string{"02:00:00:00:00:01", "02:00:00:00:00:02"}
)

// NewAddressedPair makes a pair whose ends have IPv4 and IPv6 addresses
// (192.0.2.1 and 2001:db8::1 on Dev[0], .2 and ::2 on Dev[1]), so that
// the namespaces' own stacks can talk, and removes it when the test ends.
// Each end knows the other's MAC address (permanent neighbour entries) and
// skips duplicate address detection, so that between the addresses only
// what a test sends crosses: no ARP or neighbour discovery. (The kernel
// still sends IPv6 link-local traffic, from fe80::/10 to ff02::/16.)
func NewAddressedPair(t testing.TB) *Pair {
	t.Helper()
	p := newPair(t, false)
	p.IPv4, p.IPv6 = addrs4, addrs6
	for i := range 2 {
		ns, dev := p.NS[i], p.Dev[i]
		mustRun(t, "ip", "-n", ns, "addr", "add", p.IPv4[i].String()+"/24", "dev", dev)
		mustRun(t, "ip", "-n", ns, "addr", "add", p.IPv6[i].String()+"/64", "dev", dev, "nodad")
		mustRun(t, "ip", "-n", ns, "neigh", "replace", p.IPv4[1-i].String(), "lladdr", macs[1-i], "dev", dev, "nud", "permanent")
		mustRun(t, "ip", "-n", ns, "neigh", "replace", p.IPv6[1-i].String(), "lladdr", macs[1-i], "dev", dev, "nud", "permanent")
	}
	return p
}

// NewPair makes a pair and removes it when the test ends. IPv6 is disabled
// in both namespaces and no address is configured, so that the kernel
// itself sends nothing across: what arrives is exactly what a test sends.
func NewPair(t testing.TB) *Pair {
	t.Helper()
	return newPair(t, true)
}

// newPair makes a pair without addresses, with IPv6 disabled if noIPv6.
func newPair(t testing.TB, noIPv6 bool) *Pair {
	t.Helper()
	RequireRoot(t)
	n := seq.Add(1)
	id := fmt.Sprintf("%d-%d", os.Getpid()%100000, n)
	p := &Pair{
		NS:  [2]string{"tm-" + id + "-a", "tm-" + id + "-b"},
		Dev: [2]string{"tma" + id, "tmb" + id},
	}
	t.Cleanup(func() {
		for _, ns := range p.NS {
			exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	for _, ns := range p.NS {
		mustRun(t, "ip", "netns", "add", ns)
		mustRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
		if !noIPv6 {
			continue
		}
		for _, key := range []string{"all", "default"} {
			p.mustExec(t, ns, "sysctl", "-qw", "net.ipv6.conf."+key+".disable_ipv6=1")
		}
	}
	mustRun(t, "ip", "-n", p.NS[0], "link", "add", p.Dev[0], "address", macs[0], "type", "veth",
		"peer", "name", p.Dev[1], "address", macs[1], "netns", p.NS[1])
	for i := range 2 {
		mustRun(t, "ip", "-n", p.NS[i], "link", "set", p.Dev[i], "up")
	}
	return p
}

// Command returns a command that runs inside namespace NS[side]. It enters
// only the network namespace, so /sys/fs/bpf stays the host's.
func (p *Pair) Command(side int, name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + p.NS[side], name}, args...)...)
}

func (p *Pair) mustExec(t testing.TB, ns, name string, args ...string) {
	t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// SetMTU sets the MTU of both ends.
func (p *Pair) SetMTU(t testing.TB, mtu int) {
	t.Helper()
	for i := range 2 {
		mustRun(t, "ip", "-n", p.NS[i], "link", "set", p.Dev[i], "mtu", fmt.Sprint(mtu))
	}
}

// Do runs f on a thread inside namespace NS[side]. Sockets and links that
// f makes belong to that namespace.
func (p *Pair) Do(side int, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is left locked, and so ends with the goroutine,
		// rather than going back to the pool in another namespace.
		runtime.LockOSThread()
		ns, err := os.Open("/run/netns/" + p.NS[side])
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- err
			return
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter %s: %w", p.NS[side], err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Send sends frames out of Dev[1], so that they arrive on Dev[0], and
// returns once the kernel has taken them all.
func (p *Pair) Send(frames ...[]byte) error {
	return p.Do(1, func() error {
		send, done, err := PacketSender(p.Dev[1])
		if err != nil {
			return err
		}
		defer done()
		for _, f := range frames {
			if err := send(f); err != nil {
				return err
			}
		}
		return nil
	})
}

// PacketSender opens, in the calling thread's network namespace (see
// Pair.Do), a packet socket that sends whole frames out of the interface
// dev: send sends one, done closes the socket.
func PacketSender(dev string) (send func(frame []byte) error, done func(), err error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("packet socket: %w", err)
	}
	ifi, err := ifreqIndex(dev)
	if err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	addr := &unix.SockaddrLinklayer{Ifindex: ifi, Halen: 6}
	send = func(f []byte) error {
		if err := unix.Sendto(fd, f, 0, addr); err != nil {
			return fmt.Errorf("send %d-byte frame: %w", len(f), err)
		}
		return nil
	}
	return send, func() { unix.Close(fd) }, nil
}

// ifreqIndex asks the kernel for an interface's index in the calling
// thread's namespace (/sys shows the namespace it was mounted in).
func ifreqIndex(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("interface %s: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}

// Index returns the ifindex of Dev[side] in its namespace.
func (p *Pair) Index(side int) (int, error) {
	var i int
	err := p.Do(side, func() (err error) {
		i, err = ifreqIndex(p.Dev[side])
		return err
	})
	return i, err
}

func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// Peer returns the same pair seen from its other end: its NS[0], Dev[0]
// and addresses of index 0 are p's of index 1, and the other way round.
// A helper that works in NS[0] works in NS[1] when given p.Peer().
func (p *Pair) Peer() *Pair {
	return &Pair{
		NS:   [2]string{p.NS[1], p.NS[0]},
		Dev:  [2]string{p.Dev[1], p.Dev[0]},
		IPv4: [2]netip.Addr{p.IPv4[1], p.IPv4[0]},
		IPv6: [2]netip.Addr{p.IPv6[1], p.IPv6[0]},
	}
}
