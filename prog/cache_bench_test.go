package prog

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/traffic-meter/traffic_meter/internal/frame"
	"github.com/traffic-meter/traffic_meter/internal/testnet"
	"github.com/traffic-meter/traffic_meter/maps"
)

// BenchmarkCache measures the XDP program per frame over many addresses,
// as real traffic carries them, at 1 rule and at 1,000,000 rules per
// family of many prefix lengths (ruleSet, plus 0.0.0.0/0 and ::/0 so that
// every frame counts at either size). The kernel's test run repeats one
// frame, so each program measured here starts with a few instructions
// that rewrite the frame's source and destination (IPv4: the whole
// address; IPv6: its first 32 bits) from a counter kept in the frame's
// payload before the program's own work: the source of run i is
// i x 0x9e3779b1 (a bijection, so distinct counters are distinct
// addresses, spread over the whole space), its destination that xor
// 0x5a5a5a5a. Per variant:
//
//   - working-set: the counter cycles through 500 values: 1,000 active
//     addresses, 500 sources and 500 destinations;
//   - scan: it never cycles and starts at random: every address new;
//
// and, measured interleaved in the same run:
//
//   - rewrite: the rewriting alone, then XDP_PASS (the empty program);
//   - rules=1 and rules=1000000: the program over each set, cache in use;
//   - no-cache: the program over the 1,000,000 rules with the set's
//     generation odd, so that the cache is bypassed: the trie alone, as
//     before the cache (plus the test of the generation's parity).
//
// It reports each in ns/frame, and the ratios: x-1rule (1,000,000 rules
// over 1 rule, the goal: at most 1.5 for the working set), x-nocache
// (1,000,000 rules, cache over no cache, the goal: at most 1.10 for the
// scan) and x-rewrite (1,000,000 rules over the rewriting alone).
//
//	go test -run - -bench Cache -benchtime 10x ./prog
func BenchmarkCache(b *testing.B) {
	testnet.RequireRoot(b)
	h := available(b, XDPMultiBuffer)
	defaults := []string{"0.0.0.0/0", "::/0"}
	one, big := ruleSet(b, 1, defaults), ruleSet(b, 1_000_000, defaults)
	b.Cleanup(func() { one.Close(); big.Close() })
	for _, fam := range []struct {
		name string
		f    family
		data []byte
	}{
		{"ipv4", ipv4, frame.Frame{Src: ip("10.1.2.3"), Dst: ip("10.4.5.6"), Payload: 22}.Bytes()},
		{"ipv6", ipv6, frame.Frame{Src: ip("2001:db8:1::3"), Dst: ip("2001:db8:4::6"), Payload: 4}.Bytes()},
	} {
		for _, v := range []struct {
			name string
			ws   int32 // the working set; 0: a scan
		}{{"working-set", 500}, {"scan", 0}} {
			b.Run(fam.name+"/"+v.name, func(b *testing.B) {
				rewrite := rotating(b, h, fam.f, v.ws, nil, nil)
				atOne := rotating(b, h, fam.f, v.ws, Instructions(h), one)
				atBig := rotating(b, h, fam.f, v.ws, Instructions(h), big)
				rng := rand.New(rand.NewPCG(5, 6))
				data := func() []byte {
					d := append([]byte(nil), fam.data...)
					if v.ws == 0 {
						putCounter(d, fam.f, rng.Uint32())
					}
					return d
				}
				var tRewrite, tOne, tBig, tNoCache time.Duration
				for b.Loop() {
					tRewrite += bench(b, h, rewrite, data())
					tOne += bench(b, h, atOne, data())
					tBig += bench(b, h, atBig, data())
					// The same program and set, the cache bypassed.
					step(b, big.BeginChange)
					tNoCache += bench(b, h, atBig, data())
					step(b, big.EndChange)
					// The cache is empty again: warm it, untimed.
					bench(b, h, atBig, data())
				}
				perFrame := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N*batch) }
				b.ReportMetric(perFrame(tBig), "ns/frame")
				b.ReportMetric(perFrame(tOne), "1rule-ns/frame")
				b.ReportMetric(perFrame(tNoCache), "nocache-ns/frame")
				b.ReportMetric(perFrame(tRewrite), "rewrite-ns/frame")
				b.ReportMetric(float64(tBig)/float64(tOne), "x-1rule")
				b.ReportMetric(float64(tBig)/float64(tNoCache), "x-nocache")
				b.ReportMetric(float64(tBig)/float64(tRewrite), "x-rewrite")
			})
		}
	}
	checkCounted(b, big)
}

func step(b *testing.B, fn func() error) {
	if err := fn(); err != nil {
		b.Fatal(err)
	}
}

// Where rotating's counter and addresses are: the counter in the first 4
// bytes of the UDP payload, the address words in the IP header.
func counterOff(f family) int16 { return ethHeader + f.minHeader + 8 }

// putCounter sets the counter of a frame of family f.
func putCounter(d []byte, f family, v uint32) {
	off := counterOff(f)
	d[off], d[off+1], d[off+2], d[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// rotating loads body (nil: return the verdict) over set behind a prologue
// that steps the frame's counter, wrapping at ws (0: never), and writes
// counter x 0x9e3779b1 over the first 32 bits of the source address and
// that xor 0x5a5a5a5a over the destination's: see BenchmarkCache.
func rotating(b *testing.B, h Hook, f family, ws int32, body asm.Instructions, set *maps.Set) *ebpf.Program {
	ctr := counterOff(f)
	start := "rotate_body"
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, h.DataOff, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, h.DataEndOff, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, int32(ctr)+4),
		asm.JGT.Reg(asm.R4, asm.R3, start),
		// ctr++; if (ws && ctr >= ws) ctr = 0;
		asm.LoadMem(asm.R5, asm.R2, ctr, asm.Word),
		asm.Add.Imm32(asm.R5, 1),
	}
	if ws > 0 {
		insns = append(insns,
			asm.JLT.Imm(asm.R5, ws, "rotate_store"),
			asm.Mov.Imm(asm.R5, 0),
		)
	}
	insns = append(insns,
		asm.StoreMem(asm.R2, ctr, asm.R5, asm.Word).WithSymbol("rotate_store"),
		// src = ctr * 0x9e3779b1; dst = src ^ 0x5a5a5a5a;
		asm.Mul.Imm32(asm.R5, -0x61c8864f),
		asm.StoreMem(asm.R2, ethHeader+f.src, asm.R5, asm.Word),
		asm.Xor.Imm32(asm.R5, 0x5a5a5a5a),
		asm.StoreMem(asm.R2, ethHeader+f.dst, asm.R5, asm.Word),
	)
	if body == nil {
		body = asm.Instructions{asm.Mov.Imm(asm.R0, h.Verdict), asm.Return()}
	}
	body = append(asm.Instructions(nil), body...)
	body[0] = body[0].WithSymbol(start)
	spec := &ebpf.ProgramSpec{Type: h.Type, AttachType: h.AttachType, License: "GPL", Instructions: append(insns, body...)}
	if h.Frags {
		spec.Flags = Spec(h).Flags
	}
	var p *ebpf.Program
	var err error
	if set == nil {
		p, err = ebpf.NewProgram(spec)
	} else {
		p, err = loadOver(spec, set)
	}
	if err != nil {
		b.Fatal(fmt.Errorf("load the rotating program: %w", err))
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// BenchmarkGeneration measures what reading the generation costs a frame
// (the array lookup of body, which the kernel inlines, and the loads of
// the generation and the mask): a program that does only that, against
// the empty program, in the same run.
//
//	go test -run - -bench Generation -benchtime 10x ./prog
func BenchmarkGeneration(b *testing.B) {
	testnet.RequireRoot(b)
	h := available(b, XDPMultiBuffer)
	set, err := maps.Create(maps.Capacity{MaxRules: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { set.Close() })
	insns := asm.Instructions{
		asm.Mov.Imm(rGen, 1),
		asm.StoreImm(asm.RFP, cacheMask, 0, asm.Word),
		asm.StoreImm(asm.RFP, cacheIndex, 0, asm.Word),
	}
	insns = append(insns, lookup("", maps.GenerationName, cacheIndex)...)
	insns = append(insns,
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(rGen, asm.R0, maps.GenerationOff, asm.DWord),
		asm.LoadMem(asm.R1, asm.R0, maps.CacheMaskOff, asm.Word),
		asm.StoreMem(asm.RFP, cacheMask, asm.R1, asm.Word),
		asm.Mov.Imm(asm.R0, h.Verdict).WithSymbol("out"),
		asm.Return(),
	)
	p, err := loadOver(&ebpf.ProgramSpec{Type: h.Type, License: "GPL", Instructions: insns}, set)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	empty := emptyProgram(b, h)
	data := frame.Frame{Src: ip("10.1.2.3"), Dst: ip("10.4.5.6"), Payload: 22}.Bytes()
	var prog, base time.Duration
	for b.Loop() {
		base += bench(b, h, empty, data)
		prog += bench(b, h, p, data)
	}
	b.ReportMetric(float64((prog-base).Nanoseconds())/float64(b.N*batch), "ns/frame")
	b.ReportMetric(float64(prog)/float64(base), "x-empty")
}
