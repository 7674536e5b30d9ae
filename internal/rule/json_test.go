package rule

import (
	"strings"
	"testing"

	"github.com/traffic-meter/traffic_meter/internal/readtest"
)

func TestReadJSON(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		rules    string // the rules read, space-separated
		warnings string // "index: piece of the reason", semicolon-separated
		err      string // a piece of the error
	}{
		{name: "empty array", in: `[]`},
		{name: "mixed", in: `["10.0.0.0/24", "2001:db8::1", " x", 5, {"a": [1]}, ["b"], null, true, "10.0.0.1/24", "10.0.0.0/24"]`,
			rules:    "10.0.0.0/24 2001:db8::1/128 10.0.0.0/24",
			warnings: `2: invalid address; 3: a number (5), not a string; 4: an object; 5: an array; 6: null; 7: a boolean (true); 8: host bits`},
		{name: "huge numbers", in: `[1e400, "10.0.0.0/8", -1e999, [1e400]]`, rules: "10.0.0.0/8",
			warnings: `0: a number (1e400), not a string; 2: a number (-1e999), not a string; 3: an array`},
		{name: "huge number root", in: `1e400`, err: "root is a number (1e400)"},
		{name: "whitespace", in: "\n [ \"::/0\" ]\n\n", rules: "::/0"},
		{name: "empty file", in: ``, err: "the file is empty"},
		{name: "object root", in: `{"rules": ["10.0.0.0/24"]}`, err: "the JSON root is an object, not an array"},
		{name: "string root", in: `"10.0.0.0/24"`, err: `root is a string ("10.0.0.0/24")`},
		{name: "number root", in: `5`, err: "root is a number (5)"},
		{name: "unterminated", in: `["10.0.0.0/24"`, err: "ends before the array does"},
		{name: "bad syntax late", in: `["10.0.0.0/24", "10.0.0.1",, "x"]`, err: "invalid JSON at byte"},
		{name: "trailing data", in: `["10.0.0.0/24"] []`, err: "invalid JSON"},
		{name: "trailing garbage", in: `["10.0.0.0/24"] x`, err: "invalid JSON"},
		{name: "not JSON", in: `10.0.0.0/24`, err: "not an array"},
		{name: "garbage", in: `x`, err: "invalid JSON at byte"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var warnings readtest.Warnings
			rules, err := ReadJSON(strings.NewReader(tt.in), warnings.Warn)
			if readtest.CheckErr(t, err, tt.err) {
				return
			}
			var got []string
			for _, r := range rules {
				got = append(got, r.String())
			}
			if g := strings.Join(got, " "); g != tt.rules {
				t.Errorf("rules %q, want %q", g, tt.rules)
			}
			warnings.Check(t, tt.warnings)
		})
	}
}

// FuzzReadJSON checks that ReadJSON never panics, warns with increasing
// indexes, and returns only canonical rules that parse back to themselves.
func FuzzReadJSON(f *testing.F) {
	for _, s := range []string{`[]`, `["10.0.0.0/24", "2001:db8::1", 5, {"a": [1]}, null]`,
		`{"a": 1}`, `["10.0.0.1/24"`, `[[[["x"]]]]`, `["fe80::1%eth0"] x`, `[1e400]`, `["\u0031.2.3.4"]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		rules, err := ReadJSON(strings.NewReader(in), readtest.OrderedWarn(t))
		if err != nil {
			readtest.OneLine(t, err)
			return
		}
		for _, r := range rules {
			if again, err := Parse(r.String()); err != nil || again != r {
				t.Fatalf("rule %v parses back as %v, %v", r, again, err)
			}
		}
	})
}
