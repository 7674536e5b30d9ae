package textfmt

import (
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	tb := NewTable("RULE", "PACKETS", "BYTES")
	tb.Add("10.0.0.0/24", "3", "294 B")
	tb.Add("2001:db8::/64", "12345", "1.2 KiB")
	var b strings.Builder
	if err := tb.Write(&b); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"RULE           PACKETS    BYTES\n" +
		"10.0.0.0/24          3    294 B\n" +
		"2001:db8::/64    12345  1.2 KiB\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestLeft(t *testing.T) {
	tb := NewLeftTable("INTERFACE", "MODE", "PROGRAM")
	tb.Add("veth0", "native", "60501")
	tb.Add("eth1.100", "generic", "7")
	var b strings.Builder
	if err := tb.Write(&b); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"INTERFACE  MODE     PROGRAM\n" +
		"veth0      native   60501\n" +
		"eth1.100   generic  7\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestLarge writes a table larger than one piece.
func TestLarge(t *testing.T) {
	tb := NewTable("A", "B")
	for range 10000 {
		tb.Add("x", "y")
	}
	var b strings.Builder
	if err := tb.Write(&b); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), "x  y\n"); n != 10000 {
		t.Errorf("%d rows written, want 10000", n)
	}
}
