package attach

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/maps"
)

// Record returns what the registry of attachments (maps.AttachmentRecord)
// keeps of the attachment numbered n that a program of ID prog is about
// to make on ifc at p: its identity, the interface's network namespace,
// index, the direction and the hook, with the interface's name.
func Record(n uint32, ifc *Interface, p Point, prog ebpf.ProgramID) maps.AttachmentRecord {
	return maps.AttachmentRecord{Number: n, Netns: ifc.netns, Ifindex: uint32(ifc.Index), Ifname: ifc.Name,
		Direction: string(p.Direction), Hook: string(p.Hook), ProgID: uint32(prog), LoadedAt: time.Now()}
}

// Loaded returns whether a record of the registry stands for one of the
// attachments live (List): the same identity, and the same program.
// Any other is an attachment unloaded, or one whose program was never
// attached (a load killed or failed half-way).
func Loaded(live []Attachment) func(maps.AttachmentRecord) bool {
	return func(r maps.AttachmentRecord) bool {
		for _, a := range live {
			if a.netns == r.Netns && uint32(a.Ifindex) == r.Ifindex && string(a.Direction) == r.Direction &&
				string(a.Hook) == r.Hook && uint32(a.ProgID) == r.ProgID {
				return true
			}
		}
		return false
	}
}

// RecordWhere names the interface of a record for people, as Where names
// an attachment's: its name when it was loaded, and its network
// namespace when that is not the caller's.
func RecordWhere(r maps.AttachmentRecord) string {
	ns, err := netnsInode("/proc/thread-self/ns/net")
	if err == nil && ns == r.Netns {
		return r.Ifname
	}
	return fmt.Sprintf("%s (network namespace %d)", r.Ifname, r.Netns)
}
