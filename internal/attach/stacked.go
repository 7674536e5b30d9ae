package attach

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// Stacking is two attachments in the same direction and network namespace
// whose interfaces are stacked, Upper on Lower (a bridge or bond and its
// port, a VLAN, macvlan or ipvlan device and its parent, also through
// devices between them): a frame that passes both is counted twice.
type Stacking struct {
	Upper, Lower Attachment
}

func (s Stacking) String() string {
	return fmt.Sprintf("%s is stacked on %s and both are loaded for %s: a frame through both is counted twice",
		s.Upper.Ifname, s.Lower.Ifname, s.Upper.Direction)
}

// stackedOnParent are the kinds of link that sit on their parent device
// (IFLA_LINK): a veth's IFLA_LINK is its peer, not a lower device.
var stackedOnParent = map[string]bool{"vlan": true, "macvlan": true, "macvtap": true, "ipvlan": true, "ipvtap": true}

// Stackings returns the stackings among attachments.
func Stackings(all []Attachment) ([]Stacking, error) {
	byNetns := map[uint64][]Attachment{}
	for _, a := range all {
		byNetns[a.netns] = append(byNetns[a.netns], a)
	}
	var out []Stacking
	for ns, as := range byNetns {
		if len(as) < 2 {
			continue
		}
		_, err := inNetns(ns, func() error {
			uppers, err := upperDevices()
			if err != nil {
				return err
			}
			for _, lower := range as {
				for _, upper := range as {
					if upper.Direction == lower.Direction && upper.Ifindex != lower.Ifindex && above(uppers, lower.Ifindex, upper.Ifindex) {
						out = append(out, Stacking{Upper: upper, Lower: lower})
					}
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// upperDevices returns, for the interfaces of the caller's network
// namespace, the devices directly stacked on each, by index.
func upperDevices() (map[int][]int, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list the interfaces: %w", err)
	}
	uppers := map[int][]int{}
	for _, l := range links {
		at := l.Attrs()
		if at.MasterIndex != 0 {
			uppers[at.Index] = append(uppers[at.Index], at.MasterIndex)
		}
		if at.ParentIndex != 0 && stackedOnParent[l.Type()] {
			uppers[at.ParentIndex] = append(uppers[at.ParentIndex], at.Index)
		}
	}
	return uppers, nil
}

// above reports whether the device upper is stacked on lower, directly or
// through others.
func above(uppers map[int][]int, lower, upper int) bool {
	seen := map[int]bool{lower: true}
	todo := []int{lower}
	for len(todo) > 0 {
		i := todo[0]
		todo = todo[1:]
		for _, u := range uppers[i] {
			if u == upper {
				return true
			}
			if !seen[u] {
				seen[u] = true
				todo = append(todo, u)
			}
		}
	}
	return false
}
