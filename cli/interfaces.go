package cli

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/cilium/ebpf"

	"github.com/traffic-meter/traffic_meter/internal/attach"
	"github.com/traffic-meter/traffic_meter/internal/pindir"
	"github.com/traffic-meter/traffic_meter/internal/rule"
	"github.com/traffic-meter/traffic_meter/internal/savefile"
	"github.com/traffic-meter/traffic_meter/internal/textfmt"
	"github.com/traffic-meter/traffic_meter/internal/watch"
	"github.com/traffic-meter/traffic_meter/maps"
)

// byInterface is what stats --by-interface reads: every rule (or the one
// asked for) with, under each rule with the option by-interface, a row
// per attachment and the remainder, and the attachments the rows' numbers
// stand for.
type byInterface struct {
	rules []maps.InterfaceBreakdown
	// records are the registry's attachments by number, loaded says
	// which are there now.
	records map[uint32]maps.AttachmentRecord
	loaded  func(maps.AttachmentRecord) bool
}

// readByInterface reads what stats --by-interface shows, under the shared
// lock.
func (s *StatsCmd) readByInterface(set *maps.Set) (*byInterface, error) {
	var only maps.Rule
	if s.IPAddress != "" {
		r, err := rule.Parse(s.IPAddress)
		if err != nil {
			return nil, err
		}
		only = r
	}
	rules, err := set.InterfaceBreakdowns(only)
	if errors.Is(err, maps.ErrUnknownRule) {
		return nil, fmt.Errorf("%w: see the rules with 'traffic_meter list', or add it with 'traffic_meter add --ip-address %s --by-interface'", err, only)
	}
	if err != nil {
		return nil, err
	}
	records, err := set.AttachmentsByNumber()
	if err != nil {
		return nil, err
	}
	live, err := attach.List(set.Dir)
	if err != nil {
		return nil, err
	}
	return &byInterface{rules: rules, records: records, loaded: attach.Loaded(live)}, nil
}

// label names the attachment of a row for people: its interface (and
// network namespace when not the caller's), its number, direction and
// hook, and "unloaded" when it is gone, "restored" when restore made it
// for saved rows.
func (b *byInterface) label(n uint32) string {
	r, ok := b.records[n]
	if !ok {
		return fmt.Sprintf("attachment #%d (unknown, unloaded)", n)
	}
	s := fmt.Sprintf("%s #%d (%s, %s", attach.RecordWhere(r), n, r.Direction, r.Hook)
	switch {
	case r.ProgID == 0:
		s += ", restored" // made by restore (maps.Set.RestoreAttachment)
	case !b.loaded(r):
		s += ", unloaded"
	}
	return s + ")"
}

// remainderLabel names a rule's remainder row.
const remainderLabel = "remainder"

// writeTable prints every rule as stats does, each rule with the option
// followed by its rows and its remainder, indented.
func (b *byInterface) writeTable(w io.Writer) error {
	t := textfmt.NewTable(watch.Columns...)
	row := func(label string, st maps.Stats) {
		cells := watch.Cells(maps.RuleStats{Stats: st})
		cells[0] = "  " + label
		t.Add(cells...)
	}
	for _, r := range b.rules {
		t.Add(watch.Cells(r.RuleStats)...)
		if !r.Options.ByInterface {
			continue
		}
		for _, ir := range r.Rows {
			row(b.label(ir.Attachment), ir.Stats)
		}
		row(remainderLabel, r.Remainder)
	}
	return t.Write(w)
}

// Types of stats --by-interface --json.
type (
	jsonCounter struct {
		Packets uint64 `json:"packets"`
		Bytes   uint64 `json:"bytes"`
	}
	jsonCounts struct {
		Packets uint64      `json:"packets"`
		Bytes   uint64      `json:"bytes"`
		In      jsonCounter `json:"in"`
		Out     jsonCounter `json:"out"`
	}
	jsonInterfaceRow struct {
		Attachment uint32 `json:"attachment"`
		Interface  string `json:"interface"`
		Netns      uint64 `json:"netns"`
		Ifindex    uint32 `json:"ifindex"`
		Direction  string `json:"direction"`
		Hook       string `json:"hook"`
		Loaded     bool   `json:"loaded"`
		jsonCounts
	}
	jsonBreakdown struct {
		Rule string `json:"rule"`
		jsonCounts
		Interfaces []jsonInterfaceRow `json:"interfaces,omitempty"`
		Remainder  *jsonCounts        `json:"remainder,omitempty"`
	}
)

func countsOf(st maps.Stats) jsonCounts {
	t := st.Total()
	return jsonCounts{t.Packets, t.Bytes, jsonCounter(st.In), jsonCounter(st.Out)}
}

// writeJSON prints
//
//	{"rules":[{"rule":"10.0.0.0/24","packets":3,"bytes":294,"in":{...},"out":{...},
//	  "interfaces":[{"attachment":1,"interface":"eth0","netns":4026531840,"ifindex":2,
//	    "direction":"ingress","hook":"xdp","loaded":true,"packets":2,...}],
//	  "remainder":{"packets":1,...}}, ...]}
//
// with "interfaces" and "remainder" for the rules with the option only
// ("interfaces" empty when none counted yet), a rule a line, as stats
// --json writes them.
func (b *byInterface) writeJSON(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	bw.WriteString(`{"rules":[`)
	for i, r := range b.rules {
		jb := jsonBreakdown{Rule: r.Rule.String(), jsonCounts: countsOf(r.Stats)}
		if r.Options.ByInterface {
			jb.Interfaces = []jsonInterfaceRow{}
			for _, ir := range r.Rows {
				rec := b.records[ir.Attachment]
				jb.Interfaces = append(jb.Interfaces, jsonInterfaceRow{Attachment: ir.Attachment, Interface: rec.Ifname,
					Netns: rec.Netns, Ifindex: rec.Ifindex, Direction: rec.Direction, Hook: rec.Hook,
					Loaded: rec.Number != 0 && b.loaded(rec), jsonCounts: countsOf(ir.Stats)})
			}
			rem := countsOf(r.Remainder)
			jb.Remainder = &rem
		}
		item, err := json.Marshal(jb)
		if err != nil {
			return err
		}
		if i > 0 {
			bw.WriteByte(',')
		}
		bw.WriteString("\n")
		bw.Write(item)
	}
	bw.WriteString("\n]}\n")
	return bw.Flush()
}

// runByInterface is stats --by-interface.
func (s *StatsCmd) runByInterface(c *Context) error {
	if s.live() {
		return s.show(c, s.readingByInterface, watch.Names{})
	}
	if s.Sort != "" || s.Top > 0 {
		return errors.New("--by-interface without --watch shows every rule in order, with its rows: give --sort and --top with --watch, or leave them out")
	}
	var b *byInterface
	err := c.read(func(set *maps.Set) (err error) {
		b, err = s.readByInterface(set)
		return err
	})
	if err != nil {
		return err
	}
	if s.JSON {
		return b.writeJSON(c.Stdout)
	}
	return b.writeTable(c.Stdout)
}

// pruneRegistry removes the attachments unloaded whose number no
// per-interface row carries from the registry of the maps in dir, if
// there are maps (pindir.PruneRegistry).
func pruneRegistry(dir string) error {
	set, err := maps.Open(dir)
	if errors.Is(err, maps.ErrNotLoaded) {
		return nil
	}
	if err != nil {
		return err
	}
	defer set.Close()
	return pindir.PruneRegistry(set)
}

// interfaceRowsStatus is what status shows of the per-interface rows:
// per family the rows made and the table's capacity, and the frames that
// found it full (counted in their rule's remainder, not in a row).
type interfaceRowsStatus struct {
	Rows     familyCounts `json:"rows"`
	Capacity familyCounts `json:"capacity"`
	Full     familyCounts `json:"frames_full"`
	// Bytes is the kernel memory the rows take (maps.InterfaceRowMemory).
	Bytes uint64 `json:"bytes"`
}

// interfaceRowsOf reads the status of the per-interface rows of set.
func interfaceRowsOf(set *maps.Set) (interfaceRowsStatus, error) {
	var st interfaceRowsStatus
	v4, v6, err := set.InterfaceRowsUsed()
	if err != nil {
		return st, err
	}
	full, err := set.Full()
	if err != nil {
		return st, err
	}
	st.Rows = familyCounts{v4, v6}
	st.Capacity = familyCounts{int(set.IfaceV4.MaxEntries()), int(set.IfaceV6.MaxEntries())}
	st.Full = familyCounts{int(full[maps.FullInterfacesV4]), int(full[maps.FullInterfacesV6])}
	cpus := ebpf.MustPossibleCPU()
	st.Bytes = uint64(v4)*maps.InterfaceRowMemory(true, cpus) + uint64(v6)*maps.InterfaceRowMemory(false, cpus)
	return st, nil
}

// String says what the rows take, and what found no room, for people.
func (st interfaceRowsStatus) String() string {
	s := fmt.Sprintf("%d IPv4 of %d, %d IPv6 of %d, about %s", st.Rows.IPv4, st.Capacity.IPv4, st.Rows.IPv6, st.Capacity.IPv6, textfmt.Bytes(st.Bytes))
	if st.Full.IPv4+st.Full.IPv6 > 0 {
		s += fmt.Sprintf("; tables full for %d IPv4 and %d IPv6 frames, counted in their rules' remainders (see --interface-rows)", st.Full.IPv4, st.Full.IPv6)
	}
	return s
}

// savedRules reads what save writes: every rule and its counters, and
// the per-interface rows, with their attachments' identities, of the rules
// with the option (the rows read first, see maps.Set.InterfaceBreakdowns).
// A row whose attachment the registry lacks (none is left so) is not
// saved: restored, its counts are in its rule's remainder.
func savedRules(set *maps.Set) ([]maps.RuleStats, savefile.Rows, error) {
	all, err := set.InterfaceBreakdowns(maps.Rule{})
	if err != nil {
		return nil, nil, err
	}
	byNumber, err := set.AttachmentsByNumber()
	if err != nil {
		return nil, nil, err
	}
	rules := make([]maps.RuleStats, len(all))
	rows := savefile.Rows{}
	for i, b := range all {
		rules[i] = b.RuleStats
		for _, r := range b.Rows {
			if rec, ok := byNumber[r.Attachment]; ok {
				rows[b.Rule] = append(rows[b.Rule], savefile.Interface{Attachment: rec, Stats: r.Stats})
			}
		}
	}
	return rules, rows, nil
}

// restoreRows writes the saved per-interface rows of the rules restore
// added (not those present, which kept their counters), after the rules:
// each under an attachment of the registry that no program counts under
// (maps.Set.RestoreAttachment), so that no frame counted meanwhile is
// overwritten. Rows it cannot write (a full table) leave their counts in
// their rules' remainders, with a warning.
func (c *Context) restoreRows(set *maps.Set, rows savefile.Rows, present []maps.Rule) {
	skip := make(map[maps.Rule]bool, len(present))
	for _, r := range present {
		skip[r] = true
	}
	numbers := map[maps.AttachmentRecord]uint32{}
	failed := 0
	var first error
	for r, saved := range rows {
		if skip[r] {
			continue
		}
		var err error
		for _, s := range saved {
			n, ok := numbers[s.Attachment]
			if !ok {
				if n, err = set.RestoreAttachment(s.Attachment); err != nil {
					break
				}
				numbers[s.Attachment] = n
			}
			if err = set.AddInterfaceRow(maps.InterfaceRow{Rule: r, Attachment: n, Stats: s.Stats}); err != nil {
				break
			}
		}
		if err != nil {
			failed++
			first = cmp.Or(first, err)
		}
	}
	if failed > 0 {
		c.Notice("could not restore the per-interface rows of %d rules (%v): what they counted is in the rules' remainders", failed, withFix(first))
	}
}

// readingByInterface reads stats --by-interface for the --watch view:
// the rules, and under each rule with the option its rows and remainder
// as parts, each with its own rate.
func (s *StatsCmd) readingByInterface(set *maps.Set) (watch.Reading, error) {
	b, err := s.readByInterface(set)
	if err != nil {
		return watch.Reading{}, err
	}
	r := watch.Reading{Parts: map[maps.Rule][]watch.Part{}}
	for _, rule := range b.rules {
		r.Stats = append(r.Stats, rule.RuleStats)
		if !rule.Options.ByInterface {
			continue
		}
		for _, ir := range rule.Rows {
			r.Parts[rule.Rule] = append(r.Parts[rule.Rule], watch.Part{Key: fmt.Sprint(ir.Attachment), Label: b.label(ir.Attachment), Stats: ir.Stats})
		}
		r.Parts[rule.Rule] = append(r.Parts[rule.Rule], watch.Part{Key: remainderLabel, Label: remainderLabel, Stats: rule.Remainder})
	}
	return r, nil
}
