package tests

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/traffic-meter/traffic_meter/internal/attach"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
	"github.com/traffic-meter/traffic_meter/prog"
)

// TestObject loads an external ELF object, made here, with --object.
func TestObject(t *testing.T) {
	p := testnet.NewPair(t)
	dir := testnet.PinDir(t)
	tmp := t.TempDir()
	obj := filepath.Join(tmp, "meter.o")
	// traffic_meter's own program, which uses the address caches and the
	// generation beside the four maps an object must have.
	if err := os.WriteFile(obj, writeELF(t, "ext_meter", maps.Capacity{MaxRules: maps.DefaultMaxRules}.Spec()), 0o600); err != nil {
		t.Fatal(err)
	}
	badSpec := maps.Capacity{MaxRules: 16}.Spec()
	badSpec[maps.StatsV6Name].ValueSize = 16
	bad := filepath.Join(tmp, "bad.o")
	if err := os.WriteFile(bad, writeELF(t, "bad_meter", badSpec), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(tmp, "garbage.o")
	if err := os.WriteFile(garbage, []byte("not an ELF file"), 0o600); err != nil {
		t.Fatal(err)
	}
	fails(t, p, dir, "read BPF object: ", "load", "--dev", p.Dev[0], "--object", garbage)
	fails(t, p, dir, "map stats_v6 in "+bad+" is a PerCPUHash with 20-byte keys and 16-byte values, not a PerCPUHash with 20-byte keys and 32-byte values", "load", "--dev", p.Dev[0], "--object", bad)
	fails(t, p, dir, "no such file", "load", "--dev", p.Dev[0], "--object", filepath.Join(tmp, "missing.o"))

	ok(t, p, dir, "add", "--ip-address", "10.0.0.0/24")
	ok(t, p, dir, "load", "--dev", p.Dev[0], "--object", obj)
	all, err := attach.List(dir)
	if err != nil || len(all) != 1 {
		t.Fatalf("attachments %+v, %v", all, err)
	}
	loaded, err := ebpf.NewProgramFromID(all[0].ProgID)
	if err != nil {
		t.Fatal(err)
	}
	defer loaded.Close()
	if info, err := loaded.Info(); err != nil || info.Name != "ext_meter" {
		t.Fatalf("the attached program is %q (%v), not the object's", info.Name, err)
	}
	send(t, p, oneFrame)
	checkStats(t, p, dir, expect([]string{"10.0.0.0/24"}, oneFrame))
	ok(t, p, dir, "unload", "--dev", p.Dev[0])
}

// writeELF writes a BPF ELF object holding traffic_meter's program (the
// linear-length variant) as function name in section "xdp", its maps in a
// legacy "maps" section (struct bpf_map_def), relocations of the map loads
// in ".relxdp" and a GPL license.
func writeELF(t *testing.T, name string, specs map[string]*ebpf.MapSpec) []byte {
	t.Helper()
	le := binary.LittleEndian
	insns := prog.Instructions(prog.XDPLinear)
	var code bytes.Buffer
	if err := insns.Marshal(&code, le); err != nil {
		t.Fatal(err)
	}

	// Symbols: null, the program, then one per map.
	strtab := []byte{0}
	str := func(s string) uint32 {
		off := uint32(len(strtab))
		strtab = append(append(strtab, s...), 0)
		return off
	}
	const (
		secXDP = 1 + iota
		secMaps
		secLicense
		secRel
		secSymtab
		secStrtab
		secShstrtab
	)
	var symtab, mapDefs, rels bytes.Buffer
	sym := func(name uint32, info byte, shndx uint16, value, size uint64) {
		binary.Write(&symtab, le, elf.Sym64{Name: name, Info: info, Shndx: shndx, Value: value, Size: size})
	}
	sym(0, 0, 0, 0, 0)
	sym(str(name), elf.ST_INFO(elf.STB_GLOBAL, elf.STT_FUNC), secXDP, 0, uint64(code.Len()))
	symIndex := map[string]uint32{}
	for i, n := range maps.Names {
		s := specs[n]
		symIndex[n] = uint32(2 + i)
		sym(str(n), elf.ST_INFO(elf.STB_GLOBAL, elf.STT_OBJECT), secMaps, uint64(mapDefs.Len()), 20)
		binary.Write(&mapDefs, le, [5]uint32{uint32(s.Type), s.KeySize, s.ValueSize, s.MaxEntries, s.Flags})
	}
	iter := insns.Iterate()
	for iter.Next() {
		if iter.Ins.IsLoadFromMap() {
			idx, ok := symIndex[iter.Ins.Reference()]
			if !ok {
				t.Fatalf("map load of unknown map %q", iter.Ins.Reference())
			}
			binary.Write(&rels, le, elf.Rel64{Off: uint64(iter.Offset) * asm.InstructionSize, Info: elf.R_INFO(idx, rBPF64_64)})
		}
	}

	// Sections, laid out after the header, then the section headers.
	shstrtab := []byte{0}
	shstr := func(s string) uint32 {
		off := uint32(len(shstrtab))
		shstrtab = append(append(shstrtab, s...), 0)
		return off
	}
	type section struct {
		hdr  elf.Section64
		data []byte
	}
	sections := []section{
		{},
		{elf.Section64{Name: shstr("xdp"), Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC | elf.SHF_EXECINSTR), Addralign: 8}, code.Bytes()},
		{elf.Section64{Name: shstr("maps"), Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC | elf.SHF_WRITE), Addralign: 4}, mapDefs.Bytes()},
		{elf.Section64{Name: shstr("license"), Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC | elf.SHF_WRITE), Addralign: 1}, []byte("GPL\x00")},
		{elf.Section64{Name: shstr(".relxdp"), Type: uint32(elf.SHT_REL), Link: secSymtab, Info: secXDP, Addralign: 8, Entsize: 16}, rels.Bytes()},
		{elf.Section64{Name: shstr(".symtab"), Type: uint32(elf.SHT_SYMTAB), Link: secStrtab, Info: 1, Addralign: 8, Entsize: elf.Sym64Size}, symtab.Bytes()},
		{elf.Section64{Name: shstr(".strtab"), Type: uint32(elf.SHT_STRTAB), Addralign: 1}, strtab},
	}
	sections = append(sections, section{elf.Section64{Name: shstr(".shstrtab"), Type: uint32(elf.SHT_STRTAB), Addralign: 1}, shstrtab})
	if len(sections) != secShstrtab+1 {
		t.Fatal("section numbering is off")
	}
	var body bytes.Buffer
	const headerSize = 64
	for i := range sections {
		for (headerSize+body.Len())%8 != 0 {
			body.WriteByte(0)
		}
		if i > 0 {
			sections[i].hdr.Off = uint64(headerSize + body.Len())
			sections[i].hdr.Size = uint64(len(sections[i].data))
		}
		body.Write(sections[i].data)
	}
	for (headerSize+body.Len())%8 != 0 {
		body.WriteByte(0)
	}
	var out bytes.Buffer
	hdr := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_BPF), Version: uint32(elf.EV_CURRENT),
		Shoff: uint64(headerSize + body.Len()), Ehsize: headerSize, Shentsize: 64,
		Shnum: uint16(len(sections)), Shstrndx: secShstrtab,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	binary.Write(&out, le, hdr)
	out.Write(body.Bytes())
	for _, s := range sections {
		binary.Write(&out, le, s.hdr)
	}
	if !strings.HasPrefix(out.String(), elf.ELFMAG) {
		t.Fatal("no ELF magic")
	}
	return out.Bytes()
}

// rBPF64_64 is the BPF relocation of a 64-bit immediate load (R_BPF_64_64),
// which debug/elf does not name.
const rBPF64_64 = 1
