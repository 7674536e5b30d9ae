package rule

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		in, want string // want: the rule, or a piece of the error
		ok       bool
	}{
		{"10.0.0.1", "10.0.0.1/32", true},
		{"10.0.0.0/24", "10.0.0.0/24", true},
		{"0.0.0.0/0", "0.0.0.0/0", true},
		{"2001:db8::1", "2001:db8::1/128", true},
		{"2001:db8::/32", "2001:db8::/32", true},
		{"2001:DB8::/32", "2001:db8::/32", true},
		{"::/0", "::/0", true},
		{"64:ff9b::1.2.3.4", "64:ff9b::102:304/128", true},
		{"", "empty address", false},
		{"10.0.0.1/24", "write the network address, 10.0.0.0/24", false},
		{"2001:db8::1/32", "2001:db8::/32", false},
		{"10.0.0.256", "invalid address", false},
		{"10.0.0.01", "invalid address", false},
		{"10.0.0", "invalid address", false},
		{" 10.0.0.1", "invalid address", false},
		{"10.0.0.1 ", "invalid address", false},
		{"10.0.0.0/33", "from 0 to 32", false},
		{"::/129", "from 0 to 128", false},
		{"10.0.0.0/-1", "invalid prefix length", false},
		{"10.0.0.0/024", "invalid prefix length", false},
		{"10.0.0.0/", "invalid prefix length", false},
		{"/24", "invalid address", false},
		{"10.0.0.0/24/8", "invalid prefix length", false},
		{"fe80::1%eth0", "IPv6 zone", false},
		{"fe80::%eth0/64", "IPv6 zone", false},
		{"::ffff:10.0.0.1", "write 10.0.0.1", false},
		{"::ffff:10.0.0.0/120", "write 10.0.0.0/24", false},
		{"::ffff:0:0/95", "write 0.0.0.0/N", false},
		{"example.com", "invalid address", false},
	} {
		p, err := Parse(tt.in)
		switch {
		case tt.ok && err != nil:
			t.Errorf("Parse(%q): %v", tt.in, err)
		case tt.ok && p.String() != tt.want:
			t.Errorf("Parse(%q) = %s, want %s", tt.in, p, tt.want)
		case !tt.ok && err == nil:
			t.Errorf("Parse(%q) = %s, want an error", tt.in, p)
		case !tt.ok && !strings.Contains(err.Error(), tt.want):
			t.Errorf("Parse(%q): error %q does not say %q", tt.in, err, tt.want)
		}
	}
}

// FuzzParse checks that whatever Parse accepts is a valid canonical rule
// that parses back to itself, and that it never panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "10.0.0.0/24", "10.0.0.1/24", "2001:db8::/32",
		"fe80::1%eth0", "::ffff:1.2.3.4", "::/0", "1.2.3.4/33", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("Parse(%q): multi-line error %q", s, err)
			}
			return
		}
		if !p.IsValid() || p.Masked() != p || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			t.Fatalf("Parse(%q) = %v: not a canonical rule", s, p)
		}
		again, err := Parse(p.String())
		if err != nil || again != p {
			t.Fatalf("Parse(%q) = %v, which parses back as %v, %v", s, p, again, err)
		}
		if want, err := netip.ParsePrefix(s); err == nil && want != p {
			t.Fatalf("Parse(%q) = %v, netip says %v", s, p, want)
		}
	})
}
