package pindir

import "testing"

// TestDecide checks the repair's decision on every kind of state a kill
// can leave (see the table in doc.go).
func TestDecide(t *testing.T) {
	changing := marks{changing: true}
	removing := marks{changing: true, removing: true}
	tests := []struct {
		name string
		f    found
		want fix
	}{
		{"no mark, whole set", found{pinned: 4, live: 1}, leave},
		{"no mark, no set", found{}, leave},
		{"no mark, part of a set (no change leaves it)", found{pinned: 2}, leave},
		{"changing, no set", found{marks: changing}, leave},
		{"changing, no set, an attachment", found{marks: changing, live: 1}, leave},
		{"killed creating the set", found{marks: changing, pinned: 1}, unpinSet},
		{"killed creating the set, 3 of 4", found{marks: changing, pinned: 3}, unpinSet},
		{"killed with a whole set", found{marks: changing, pinned: 4}, mendSet},
		{"killed with a whole set, attachments", found{marks: changing, pinned: 4, live: 2}, mendSet},
		{"killed removing, before the first unpin", found{marks: removing, pinned: 4}, unpinSet},
		{"killed removing, half unpinned", found{marks: removing, pinned: 2}, unpinSet},
		{"killed removing, all unpinned", found{marks: removing}, leave},
		{"removing, but an attachment (adopted) uses the set", found{marks: removing, pinned: 4, live: 1}, mendSet},
		{"removing, part of a set and an attachment", found{marks: removing, pinned: 3, live: 1}, unpinSet},
	}
	for _, tt := range tests {
		if got := decide(tt.f); got != tt.want {
			t.Errorf("%s: decide(%+v) = %v, want %v", tt.name, tt.f, got, tt.want)
		}
	}
}
