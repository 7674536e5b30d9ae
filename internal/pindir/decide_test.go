package pindir

import (
	"testing"

	"github.com/traffic-meter/traffic_meter/maps"
)

// TestDecide checks the repair's decision on every kind of state a kill
// can leave (see the table in doc.go).
func TestDecide(t *testing.T) {
	changing := marks{changing: true}
	whole := len(maps.Names)
	removing := marks{changing: true, removing: true}
	tests := []struct {
		name string
		f    found
		want fix
	}{
		{"no mark, whole set", found{pinned: whole, live: 1}, leave},
		{"no mark, no set", found{}, leave},
		{"no mark, part of a set (no change leaves it)", found{pinned: 2}, leave},
		{"changing, no set", found{marks: changing}, leave},
		{"changing, no set, an attachment", found{marks: changing, live: 1}, leave},
		{"killed creating the set", found{marks: changing, pinned: 1}, unpinSet},
		{"killed creating the set, all but one", found{marks: changing, pinned: whole - 1}, unpinSet},
		{"killed with a whole set", found{marks: changing, pinned: whole}, mendSet},
		{"killed with a whole set, attachments", found{marks: changing, pinned: whole, live: 2}, mendSet},
		{"killed removing, before the first unpin", found{marks: removing, pinned: whole}, unpinSet},
		{"killed removing, half unpinned", found{marks: removing, pinned: 2}, unpinSet},
		{"killed removing, all unpinned", found{marks: removing}, leave},
		{"removing, but an attachment (adopted) uses the set", found{marks: removing, pinned: whole, live: 1}, mendSet},
		{"removing, part of a set and an attachment", found{marks: removing, pinned: whole - 1, live: 1}, unpinSet},
	}
	for _, tt := range tests {
		if got := decide(tt.f); got != tt.want {
			t.Errorf("%s: decide(%+v) = %v, want %v", tt.name, tt.f, got, tt.want)
		}
	}
}
