package maps

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The per-interface breakdown of the rules with Options.ByInterface (SPEC
// "Breakdowns of a rule"): per family a per-CPU hash of rows, one per
// rule and attachment, and the registry of the attachments that the rows'
// numbers stand for.
//
// A row's key is the rule's key followed by the number of the attachment
// whose program counted the frames, {Key4 or Key6; u32 attachment}, and its
// value a Stats. The program makes a rule's row when it counts the first
// frame of that rule at that attachment (package prog, countInterface):
// a table that is full sends the frame to the rule's remainder, which is
// never counted but derived, the rule's total less the sum of its rows,
// and counts it in the breakdown_full map. Readers read the rows first
// and the total after, so that the rows never add up to more than it.
//
// Each attachment's program has its number baked in. A number is given
// under the exclusive lock (NextAttachment), recorded in the registry with
// the attachment's identity (RecordAttachment) before the program is
// attached, and never given again while a row or a registry entry carries
// it: a new load, also of the same interface, gets a new number, so that a
// re-created or moved interface never counts into another's rows.
const (
	IfaceV4Name     = "iface_v4"
	IfaceV6Name     = "iface_v6"
	AttachmentsName = "attachments"
)

// DefaultInterfaceRows is the default capacity of each family's table of
// per-interface rows.
const DefaultInterfaceRows = 65536

// MaxAttachments is the capacity of the registry of attachments: loads
// whose attachment is gone and whose number no row carries any more leave
// it (PruneAttachments).
const MaxAttachments = 4096

// RowKey4 is the key of an IPv4 per-interface row: the rule, and the
// number of the attachment.
type RowKey4 struct {
	Rule       Key4
	Attachment uint32
}

// RowKey6 is the key of an IPv6 per-interface row.
type RowKey6 struct {
	Rule       Key6
	Attachment uint32
}

// Sizes of the registry's and the rows' keys and values, for the program
// (the offset of the number in a row key is the rule key's size).
const (
	RowKey4Size     = key4Size + 4
	RowKey6Size     = key6Size + 4
	registryKeySize = 4
	registrySize    = 56
)

// AttachmentRecord is what the registry keeps of an attachment: its
// identity (network namespace, interface index, direction and hook), the
// interface's name and the program's ID when it was loaded, and when.
type AttachmentRecord struct {
	// Number is the attachment's number, which its program counts rows
	// under.
	Number uint32
	// Netns is the inode of the interface's network namespace, Ifindex
	// the interface's index in it and Ifname its name.
	Netns   uint64
	Ifindex uint32
	Ifname  string
	// Direction is "ingress" or "egress", Hook "xdp" or "tc".
	Direction, Hook string
	// ProgID is the program's ID: the attachment is there while a
	// program of that ID is attached with that identity.
	ProgID uint32
	// LoadedAt is when the attachment was made.
	LoadedAt time.Time
}

// registryEntry is an AttachmentRecord as the registry holds it.
type registryEntry struct {
	Netns     uint64
	Ifindex   uint32
	ProgID    uint32
	LoadedAt  int64
	Direction [8]byte
	Hook      [8]byte
	Ifname    [16]byte
}

func (r AttachmentRecord) entry() registryEntry {
	e := registryEntry{Netns: r.Netns, Ifindex: r.Ifindex, ProgID: r.ProgID, LoadedAt: r.LoadedAt.Unix()}
	copy(e.Direction[:], r.Direction)
	copy(e.Hook[:], r.Hook)
	copy(e.Ifname[:], r.Ifname)
	return e
}

func (e registryEntry) record(n uint32) AttachmentRecord {
	str := func(b []byte) string { s, _, _ := bytes.Cut(b, []byte{0}); return string(s) }
	return AttachmentRecord{Number: n, Netns: e.Netns, Ifindex: e.Ifindex, Ifname: str(e.Ifname[:]),
		Direction: str(e.Direction[:]), Hook: str(e.Hook[:]), ProgID: e.ProgID, LoadedAt: time.Unix(e.LoadedAt, 0)}
}

// interfaceSpecs returns the specs of the rows tables, of rows entries
// each, and of the registry.
func interfaceSpecs(rows uint32) map[string]*ebpf.MapSpec {
	return map[string]*ebpf.MapSpec{
		IfaceV4Name: statsSpec(IfaceV4Name, RowKey4Size, rows),
		IfaceV6Name: statsSpec(IfaceV6Name, RowKey6Size, rows),
		AttachmentsName: {Name: AttachmentsName, Type: ebpf.Hash, KeySize: registryKeySize,
			ValueSize: registrySize, MaxEntries: MaxAttachments, Flags: unix.BPF_F_NO_PREALLOC},
	}
}

// interfaceRows is c.InterfaceRows, or its default.
func (c Capacity) interfaceRows() uint32 {
	if c.InterfaceRows == 0 {
		return DefaultInterfaceRows
	}
	return c.InterfaceRows
}

// InterfaceRowMemory returns the bytes of kernel memory one per-interface
// row takes, of the given family's table (IPv4 when v4), on cpus possible
// CPUs: an element of the hash with its key and a value per CPU
// (statsMemory's terms), as the kernel allocates it when the program
// makes the row.
func InterfaceRowMemory(v4 bool, cpus int) uint64 {
	k := uint64(RowKey6Size)
	if v4 {
		k = RowKey4Size
	}
	return elemSize + roundUp8(k) + roundUp8(statsSize)*uint64(cpus)
}

// InterfaceRow is the count of one rule at one attachment, summed over
// CPUs.
type InterfaceRow struct {
	Rule       Rule
	Attachment uint32
	Stats      Stats
}

// rowKey is a row key of either family.
type rowKey interface {
	RowKey4 | RowKey6
}

// rows is the rows table of one family.
type rows[K key, R rowKey] struct {
	m     *ebpf.Map
	split func(R) (K, uint32)
	join  func(K, uint32) R
}

func (s *Set) rows4() rows[Key4, RowKey4] { return rowsV4(s.IfaceV4) }
func (s *Set) rows6() rows[Key6, RowKey6] { return rowsV6(s.IfaceV6) }

func rowsV4(m *ebpf.Map) rows[Key4, RowKey4] {
	return rows[Key4, RowKey4]{m,
		func(r RowKey4) (Key4, uint32) { return r.Rule, r.Attachment },
		func(k Key4, n uint32) RowKey4 { return RowKey4{k, n} }}
}

func rowsV6(m *ebpf.Map) rows[Key6, RowKey6] {
	return rows[Key6, RowKey6]{m,
		func(r RowKey6) (Key6, uint32) { return r.Rule, r.Attachment },
		func(k Key6, n uint32) RowKey6 { return RowKey6{k, n} }}
}

// each calls fn with every row of the table, its per-CPU values summed.
func (t rows[K, R]) each(fn func(K, uint32, Stats)) error {
	err := readBatches(t.m, ebpf.MustPossibleCPU(), func(r R, perCPU []Stats) {
		k, n := t.split(r)
		fn(k, n, SumCPUs(perCPU))
	})
	if err != nil {
		return fmt.Errorf("read the per-interface rows: %w", err)
	}
	return nil
}

// deleteWhere deletes the rows for which drop is true, and returns how
// many it deleted.
func (t rows[K, R]) deleteWhere(drop func(K, uint32) bool) (int, error) {
	var doomed []R
	if err := t.each(func(k K, n uint32, _ Stats) {
		if drop(k, n) {
			doomed = append(doomed, t.join(k, n))
		}
	}); err != nil {
		return 0, err
	}
	for _, r := range doomed {
		if err := t.m.Delete(r); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			k, _ := t.split(r)
			return 0, fmt.Errorf("delete a per-interface row of %s: %w", k.Rule(), err)
		}
	}
	return len(doomed), nil
}

// InterfaceRows returns every per-interface row, IPv4 then IPv6, each
// family sorted by rule, then attachment. A reader that shows them with
// the rules' totals reads them first (see the package's doc of rows).
func (s *Set) InterfaceRows() ([]InterfaceRow, error) {
	var all []InterfaceRow
	add := func(r Rule, n uint32, st Stats) { all = append(all, InterfaceRow{r, n, st}) }
	if err := s.rows4().each(func(k Key4, n uint32, st Stats) { add(k.Rule(), n, st) }); err != nil {
		return nil, err
	}
	if err := s.rows6().each(func(k Key6, n uint32, st Stats) { add(k.Rule(), n, st) }); err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b InterfaceRow) int {
		if c := compareRules(a.Rule, b.Rule); c != 0 {
			return c
		}
		return cmp.Compare(a.Attachment, b.Attachment)
	})
	return all, nil
}

// deleteRows deletes every per-interface row of the rule of key k: what
// cleanupOptions does when the rule loses the option or goes, and
// prepareOptions when it gets it (rows left under its key by a frame in
// flight while the rule went). A row carries the number of an attachment
// of the registry (PruneAttachments keeps those), so it deletes the key
// with each number of the registry, a system call each, and nothing when
// the table is empty (an import before any frame): the cost of a rule
// does not grow with the rows of the others.
func (f family[K]) deleteRows(k K) error {
	if first, err := f.iface.NextKeyBytes(nil); err != nil || first == nil {
		return err
	}
	var n uint32
	var numbers []uint32
	it := f.registry.Iterate()
	for it.Next(&n, new(registryEntry)) {
		numbers = append(numbers, n)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read the registry of attachments: %w", err)
	}
	for _, n := range numbers {
		var err error
		switch k := any(k).(type) {
		case Key4:
			err = f.iface.Delete(RowKey4{k, n})
		case Key6:
			err = f.iface.Delete(RowKey6{k, n})
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete the per-interface row of %s at attachment %d: %w", k.Rule(), n, err)
		}
	}
	return nil
}

// RemoveOrphanRows deletes the per-interface rows whose rule is not in
// the trie, or does not have the option: those a change killed between
// deleting a rule, or taking its option, and deleting its rows left. It
// returns how many it deleted.
func (s *Set) RemoveOrphanRows() (int, error) {
	n4, err := removeOrphanRows(s.v4(), s.rows4())
	if err != nil {
		return 0, err
	}
	n6, err := removeOrphanRows(s.v6(), s.rows6())
	return n4 + n6, err
}

func removeOrphanRows[K key, R rowKey](f family[K], t rows[K, R]) (int, error) {
	keep := make(map[K]bool)
	if err := readBatches(f.rules, 1, func(k K, v []uint32) { keep[k] = v[0]&ByInterfaceBit != 0 }); err != nil {
		return 0, fmt.Errorf("read rules: %w", err)
	}
	return t.deleteWhere(func(k K, _ uint32) bool { return !keep[k] })
}

// AddInterfaceRow adds the counts of a saved row to the row of its rule
// and attachment, making it if need be: restore's, under an attachment
// that no program counts under (RestoreAttachment), so that reading the
// row and writing it back loses nothing.
func (s *Set) AddInterfaceRow(row InterfaceRow) error {
	var err error
	if row.Rule.Addr().Is4() {
		err = addRow(s.IfaceV4, RowKey4{Key4Of(row.Rule), row.Attachment}, row.Stats)
	} else {
		err = addRow(s.IfaceV6, RowKey6{Key6Of(row.Rule), row.Attachment}, row.Stats)
	}
	if errors.Is(err, unix.E2BIG) {
		return fmt.Errorf("%w (%d per family)", ErrRowsFull, s.IfaceV4.MaxEntries())
	}
	if err != nil {
		return fmt.Errorf("write a per-interface row of %s: %w", row.Rule, err)
	}
	return nil
}

// addRow adds st to the row of key k of m, on the first CPU.
func addRow[R rowKey](m *ebpf.Map, k R, st Stats) error {
	perCPU := make([]Stats, ebpf.MustPossibleCPU())
	if err := m.Lookup(k, perCPU); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	perCPU[0] = perCPU[0].Add(st)
	return retryNoMem(func() (int, error) { return 0, m.Update(k, perCPU, ebpf.UpdateAny) })
}

// RestoreAttachment returns the number under which restore writes the
// saved rows of attachment r (its identity and name; its number and
// program are not saved): that of an attachment of the registry that no
// program counts under (ProgID 0: one restore made) with the same
// identity and name, else a new one (NextAttachment) recorded so. Such an
// attachment shows as unloaded, and no program ever gets its number.
func (s *Set) RestoreAttachment(r AttachmentRecord) (uint32, error) {
	records, err := s.Attachments()
	if err != nil {
		return 0, err
	}
	for _, e := range records {
		if e.ProgID == 0 && e.Netns == r.Netns && e.Ifindex == r.Ifindex && e.Direction == r.Direction && e.Hook == r.Hook && e.Ifname == r.Ifname {
			return e.Number, nil
		}
	}
	if r.Number, err = s.NextAttachment(); err != nil {
		return 0, err
	}
	r.ProgID, r.LoadedAt = 0, time.Now()
	return r.Number, s.RecordAttachment(r)
}

// ErrRowsFull says that a family's table of per-interface rows is full.
var ErrRowsFull = errors.New("the per-interface rows table is full")

// InterfaceRowsUsed returns how many per-interface rows each family's
// table holds.
func (s *Set) InterfaceRowsUsed() (v4, v6 int, err error) {
	if err := s.rows4().each(func(Key4, uint32, Stats) { v4++ }); err != nil {
		return 0, 0, err
	}
	if err := s.rows6().each(func(Key6, uint32, Stats) { v6++ }); err != nil {
		return 0, 0, err
	}
	return v4, v6, nil
}

// NextAttachment returns the number for a new attachment: one more than
// any number that the registry or a row carries (numbers start at 1). The
// caller holds the exclusive lock and records the number
// (RecordAttachment) before it attaches the program.
func (s *Set) NextAttachment() (uint32, error) {
	var top uint32
	records, err := s.Attachments()
	if err != nil {
		return 0, err
	}
	for _, r := range records {
		top = max(top, r.Number)
	}
	if err := s.rows4().each(func(_ Key4, n uint32, _ Stats) { top = max(top, n) }); err != nil {
		return 0, err
	}
	if err := s.rows6().each(func(_ Key6, n uint32, _ Stats) { top = max(top, n) }); err != nil {
		return 0, err
	}
	if top == ^uint32(0) {
		return 0, errors.New("no attachment number is left")
	}
	return top + 1, nil
}

// ErrRegistryFull says that the registry of attachments is full.
var ErrRegistryFull = fmt.Errorf("the registry of attachments is full (%d attachments)", MaxAttachments)

// RecordAttachment records attachment r under its number in the registry,
// before its program is attached.
func (s *Set) RecordAttachment(r AttachmentRecord) error {
	err := s.Registry.Update(r.Number, r.entry(), ebpf.UpdateNoExist)
	if errors.Is(err, unix.E2BIG) {
		return ErrRegistryFull
	}
	if err != nil {
		return fmt.Errorf("record attachment %d: %w", r.Number, err)
	}
	return nil
}

// ForgetAttachment removes attachment n from the registry: the undo of
// RecordAttachment when the program could not be attached.
func (s *Set) ForgetAttachment(n uint32) error {
	if err := s.Registry.Delete(n); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("forget attachment %d: %w", n, err)
	}
	return nil
}

// Attachments returns the registry, sorted by number.
func (s *Set) Attachments() ([]AttachmentRecord, error) {
	var all []AttachmentRecord
	var n uint32
	var e registryEntry
	it := s.Registry.Iterate()
	for it.Next(&n, &e) {
		all = append(all, e.record(n))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read the registry of attachments: %w", err)
	}
	slices.SortFunc(all, func(a, b AttachmentRecord) int { return cmp.Compare(a.Number, b.Number) })
	return all, nil
}

// AttachmentsByNumber returns the registry by number: what a reader of
// the rows names their attachments with.
func (s *Set) AttachmentsByNumber() (map[uint32]AttachmentRecord, error) {
	records, err := s.Attachments()
	if err != nil {
		return nil, err
	}
	m := make(map[uint32]AttachmentRecord, len(records))
	for _, r := range records {
		m[r.Number] = r
	}
	return m, nil
}

// PruneAttachments removes from the registry the attachments that are
// gone (live says which are there) and whose number no row carries, and
// returns how many it removed. The caller holds the exclusive lock.
func (s *Set) PruneAttachments(live func(AttachmentRecord) bool) (int, error) {
	carried := make(map[uint32]bool)
	if err := s.rows4().each(func(_ Key4, n uint32, _ Stats) { carried[n] = true }); err != nil {
		return 0, err
	}
	if err := s.rows6().each(func(_ Key6, n uint32, _ Stats) { carried[n] = true }); err != nil {
		return 0, err
	}
	records, err := s.Attachments()
	if err != nil {
		return 0, err
	}
	pruned := 0
	for _, r := range records {
		if carried[r.Number] || live(r) {
			continue
		}
		if err := s.ForgetAttachment(r.Number); err != nil {
			return pruned, err
		}
		pruned++
	}
	return pruned, nil
}

// InterfaceBreakdown is a rule's total and, when the rule has the option
// by-interface, its per-interface rows and its remainder: the total less
// the rows, what the rule counted before it had the option or when a
// table was full. The rows and the remainder add up to the total.
type InterfaceBreakdown struct {
	RuleStats
	// Rows are the rule's rows, by attachment number.
	Rows []InterfaceRow
	// Remainder is the total less the rows.
	Remainder Stats
}

// InterfaceBreakdowns returns every rule (Stats) with, for those with the
// option by-interface, its rows and remainder; only, when valid, keeps
// that rule alone (ErrUnknownRule when there is none). The rows are read
// before the totals, so that a frame counted meanwhile is in the total,
// hence in the remainder, and never in a row alone.
func (s *Set) InterfaceBreakdowns(only Rule) ([]InterfaceBreakdown, error) {
	rows, err := s.InterfaceRows()
	if err != nil {
		return nil, err
	}
	totals, err := s.Stats()
	if err != nil {
		return nil, err
	}
	if only.IsValid() {
		i := slices.IndexFunc(totals, func(rs RuleStats) bool { return rs.Rule == only })
		if i < 0 {
			return nil, fmt.Errorf("%w %s", ErrUnknownRule, only)
		}
		totals = totals[i : i+1]
	}
	byRule := make(map[Rule][]InterfaceRow)
	for _, r := range rows {
		byRule[r.Rule] = append(byRule[r.Rule], r)
	}
	out := make([]InterfaceBreakdown, len(totals))
	for i, rs := range totals {
		out[i].RuleStats = rs
		if !rs.Options.ByInterface {
			continue
		}
		out[i].Rows = byRule[rs.Rule]
		out[i].Remainder = rs.Stats
		for _, r := range out[i].Rows {
			out[i].Remainder = out[i].Remainder.less(r.Stats)
		}
	}
	return out, nil
}

// less returns s less o, counter by counter, never below zero (the rows
// read before a total never exceed it).
func (s Stats) less(o Stats) Stats {
	sub := func(a, b uint64) uint64 { return a - min(a, b) }
	return Stats{In: Counter{sub(s.In.Packets, o.In.Packets), sub(s.In.Bytes, o.In.Bytes)},
		Out: Counter{sub(s.Out.Packets, o.Out.Packets), sub(s.Out.Bytes, o.Out.Bytes)}}
}

// ByInterface reports whether rule r is a rule with the option
// by-interface: a reader of the rows alone (the exporter's) shows only
// theirs, not those a killed change left to its repair.
func (s *Set) ByInterface(r Rule) (bool, error) {
	var o Options
	var has bool
	var err error
	if r.Addr().Is4() {
		o, has, err = s.v4().options(Key4Of(r))
	} else {
		o, has, err = s.v6().options(Key6Of(r))
	}
	return has && o.ByInterface, err
}
