package attach

import "testing"

// TestAbove checks the walk up the stack of devices: a bridge over a bond
// over two NICs, a VLAN device on the bridge.
func TestAbove(t *testing.T) {
	const nic1, nic2, bond, bridge, vlan, other = 2, 3, 4, 5, 6, 7
	uppers := map[int][]int{nic1: {bond}, nic2: {bond}, bond: {bridge}, bridge: {vlan}}
	for _, tt := range []struct {
		lower, upper int
		want         bool
	}{
		{nic1, bond, true}, {nic1, bridge, true}, {nic2, vlan, true}, {bond, vlan, true},
		{bond, nic1, false}, {nic1, nic2, false}, {vlan, bridge, false}, {other, bridge, false}, {bridge, other, false},
	} {
		if got := above(uppers, tt.lower, tt.upper); got != tt.want {
			t.Errorf("above(%d, %d) = %v, want %v", tt.lower, tt.upper, got, tt.want)
		}
	}
}
