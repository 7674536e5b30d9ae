package cli

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/attach"
	"github.com/traffic-meter/traffic_meter/internal/kernel"
	"github.com/traffic-meter/traffic_meter/internal/textfmt"
	"github.com/traffic-meter/traffic_meter/maps"
)

// StatusCmd shows what is loaded where.
type StatusCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

// status is what status shows, in the JSON form of status --json.
type status struct {
	PinDir string `json:"pin_dir"`
	// Loaded says that the maps exist.
	Loaded      bool         `json:"loaded"`
	Rules       familyCounts `json:"rules"`
	Capacity    familyCounts `json:"capacity"`
	StatsTables statsTables  `json:"stats_tables"`
	Cache       cacheStatus  `json:"address_cache"`
	// InterfaceRows is the per-interface breakdown's tables (interfaces.go).
	InterfaceRows interfaceRowsStatus `json:"interface_rows"`
	// Hosts is the per-host breakdown's tables (hosts.go).
	Hosts       hostsFamilies      `json:"hosts"`
	Attachments []attachmentStatus `json:"attachments"`
	// Stacked are the attachments that count a frame twice, each on a
	// device stacked on the other's.
	Stacked []stackedStatus `json:"stacked"`
	Kernel  kernelStatus    `json:"kernel"`
}

// stackedStatus is two attachments in the same direction, Upper's device
// stacked on Lower's (attach.Stacking).
type stackedStatus struct {
	Upper     string `json:"upper"`
	Lower     string `json:"lower"`
	Netns     uint64 `json:"netns"`
	Direction string `json:"direction"`
	warning   string
}

type familyCounts struct {
	IPv4 int `json:"ipv4"`
	IPv6 int `json:"ipv6"`
}

// statsTables says how the stats tables take their memory.
type statsTables struct {
	// Preallocated says that they were created with --prealloc.
	Preallocated bool `json:"preallocated"`
	// ReservedBytes is the kernel memory they reserve, computed from
	// their capacity and the possible CPUs: every entry when they are
	// preallocated, only their hash buckets when not.
	ReservedBytes uint64 `json:"reserved_bytes"`
	PossibleCPUs  int    `json:"possible_cpus"`
}

// cacheStatus is the address caches' size and generation.
type cacheStatus struct {
	// Entries is the size of each family's cache, per CPU.
	Entries uint32 `json:"entries_per_cpu"`
	// Bytes is the kernel memory of both families' caches.
	Bytes uint64 `json:"bytes"`
	// Generation is the rules' (maps.CacheV4Name); odd after a change
	// that was interrupted, until the next change ends.
	Generation uint64 `json:"generation"`
}

// String says what the caches hold and take, for people.
func (cs cacheStatus) String() string {
	s := fmt.Sprintf("%d addresses per CPU and family, %s", cs.Entries, textfmt.Bytes(cs.Bytes))
	if cs.Generation%2 == 1 {
		s += "; bypassed since an interrupted change, until the next change ends"
	}
	return s
}

type attachmentStatus struct {
	Interface string `json:"interface"`
	Ifindex   int    `json:"ifindex"`
	// Netns is the inode of the interface's network namespace;
	// ThisNetns says whether it is the caller's.
	Netns     uint64 `json:"netns"`
	ThisNetns bool   `json:"this_netns"`
	Direction string `json:"direction"`
	Hook      string `json:"hook"`
	Mode      string `json:"mode"`
	Method    string `json:"method"`
	ProgramID uint32 `json:"program_id"`
}

type kernelStatus struct {
	Release   string           `json:"release"`
	Fallbacks []fallbackStatus `json:"fallbacks"`
}

type fallbackStatus struct {
	Name   string `json:"name"`
	Notice string `json:"notice"`
}

// Run prints the pin directory, the rules per family and the capacity,
// how the stats tables take their memory, the address caches, every attachment, and the
// kernel fallbacks in use. Nothing loaded is no error: status says so.
func (s *StatusCmd) Run(c *Context) error {
	st := status{PinDir: c.Dir, Attachments: []attachmentStatus{}, Stacked: []stackedStatus{}}
	var all []attach.Attachment
	err := c.read(func(set *maps.Set) (err error) {
		st.Loaded = true
		// Under the shared lock, with the maps: never a change half done.
		if all, err = attach.List(c.Dir); err != nil {
			return err
		}
		st.Capacity = familyCounts{int(set.RulesV4.MaxEntries()), int(set.RulesV6.MaxEntries())}
		capacity, cpus := set.Capacity(), ebpf.MustPossibleCPU()
		st.StatsTables = statsTables{Preallocated: capacity.Prealloc, ReservedBytes: capacity.StatsMemory(cpus), PossibleCPUs: cpus}
		st.Cache = cacheStatus{Entries: capacity.CacheSize, Bytes: capacity.CacheMemory(cpus)}
		if st.Cache.Generation, err = set.Generation(); err != nil {
			return err
		}
		if st.InterfaceRows, err = interfaceRowsOf(set); err != nil {
			return err
		}
		if st.Hosts, err = readHostsStatus(set); err != nil {
			return err
		}
		rules, err := set.Rules()
		for _, r := range rules {
			if r.Rule.Addr().Is4() {
				st.Rules.IPv4++
			} else {
				st.Rules.IPv6++
			}
		}
		return err
	})
	if errors.Is(err, maps.ErrNotLoaded) {
		// Nothing to lock: the attachments as they are (none, but for a
		// loaded interface whose maps a killed command half removed).
		all, err = attach.List(c.Dir)
	}
	if err != nil {
		return err
	}
	for _, a := range all {
		st.Attachments = append(st.Attachments, statusOf(a))
	}
	stacked, err := attach.Stackings(all)
	if err != nil {
		return err
	}
	for _, s := range stacked {
		st.Stacked = append(st.Stacked, stackedStatus{Upper: s.Upper.Ifname, Lower: s.Lower.Ifname, Netns: s.Upper.Netns(),
			Direction: string(s.Upper.Direction), warning: s.String()})
	}
	f, err := kernel.Probe()
	if err != nil {
		return err
	}
	st.Kernel = kernelStatus{Release: f.Release, Fallbacks: []fallbackStatus{}}
	for _, fb := range f.Fallbacks() {
		st.Kernel.Fallbacks = append(st.Kernel.Fallbacks, fallbackStatus{fb.Name, fb.Notice})
	}
	if s.JSON {
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.Stdout, "%s\n", b)
		return err
	}
	return st.write(c)
}

// statusOf is the status of an attachment: where it is, and how it is
// made.
func statusOf(a attach.Attachment) attachmentStatus {
	d := a.Describe()
	return attachmentStatus{Interface: a.Ifname, Ifindex: a.Ifindex, Netns: a.Netns(), ThisNetns: a.InCallerNetns(),
		Direction: d.Direction, Hook: d.Hook, Mode: d.Mode, Method: d.Method, ProgramID: uint32(a.ProgID)}
}

// String says how the stats tables take their memory, for people.
func (t statsTables) String() string {
	if t.Preallocated {
		return fmt.Sprintf("preallocated, %s of kernel memory reserved (%d possible CPUs)", textfmt.Bytes(t.ReservedBytes), t.PossibleCPUs)
	}
	return fmt.Sprintf("memory taken per rule, %s reserved up front", textfmt.Bytes(t.ReservedBytes))
}

// write prints the status for people.
func (st *status) write(c *Context) error {
	fmt.Fprintf(c.Stdout, "pin directory: %s\n", st.PinDir)
	if st.Loaded {
		fmt.Fprintf(c.Stdout, "rules: %d IPv4 of %d, %d IPv6 of %d\n", st.Rules.IPv4, st.Capacity.IPv4, st.Rules.IPv6, st.Capacity.IPv6)
		fmt.Fprintf(c.Stdout, "stats tables: %s\n", st.StatsTables)
		fmt.Fprintf(c.Stdout, "address cache: %s\n", st.Cache)
		fmt.Fprintf(c.Stdout, "per-interface rows: %s\n", st.InterfaceRows)
		st.Hosts.write(c.Stdout)
	} else {
		fmt.Fprintf(c.Stdout, "rules: none, no maps (nothing loaded)\n")
	}
	if len(st.Attachments) == 0 {
		fmt.Fprintf(c.Stdout, "attachments: none\n")
	} else {
		t := textfmt.NewLeftTable("INTERFACE", "NETNS", "DIRECTION", "HOOK", "MODE", "METHOD", "PROGRAM")
		for _, a := range st.Attachments {
			ns := fmt.Sprint(a.Netns)
			if a.ThisNetns {
				ns += " (this)"
			}
			t.Add(a.Interface, ns, a.Direction, a.Hook, a.Mode, a.Method, fmt.Sprint(a.ProgramID))
		}
		fmt.Fprintf(c.Stdout, "attachments:\n")
		if err := t.Write(c.Stdout); err != nil {
			return err
		}
	}
	for _, s := range st.Stacked {
		fmt.Fprintf(c.Stdout, "stacked: %s\n", s.warning)
	}
	fmt.Fprintf(c.Stdout, "kernel: %s\n", st.Kernel.Release)
	if len(st.Kernel.Fallbacks) == 0 {
		fmt.Fprintf(c.Stdout, "fallbacks in use: none\n")
	}
	for _, f := range st.Kernel.Fallbacks {
		fmt.Fprintf(c.Stdout, "fallback in use: %s\n", f.Notice)
	}
	return nil
}
