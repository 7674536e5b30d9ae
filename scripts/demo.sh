#!/usr/bin/env bash
# Shows traffic_meter counting real traffic: builds it, makes a throwaway
# veth pair between two network namespaces, loads the program on one end,
# sends UDP over IPv4 and IPv6 from the other, prints list and stats, and
# removes everything again. Run as root from the repository: sudo ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "demo.sh: run it as root: sudo $0" >&2
	exit 1
fi
export PATH="$PATH:/usr/local/go/bin"

ns_a=tm-demo-a-$$ ns_b=tm-demo-b-$$ dev_a=tmdemo$$a dev_b=tmdemo$$b
pin=/sys/fs/bpf/traffic_meter-demo-$$
work=$(mktemp -d)
cleanup() {
	ip netns del "$ns_a" 2>/dev/null || true
	ip netns del "$ns_b" 2>/dev/null || true
	rm -rf "$pin" "$work"
}
trap cleanup EXIT

echo "# building traffic_meter"
CGO_ENABLED=0 go build -o "$work/traffic_meter" ./cmd/traffic_meter

echo "# making a veth pair: $dev_a in $ns_a <-> $dev_b in $ns_b"
ip netns add "$ns_a"
ip netns add "$ns_b"
ip -n "$ns_a" link add "$dev_a" type veth peer name "$dev_b" netns "$ns_b"
ip -n "$ns_a" addr add 192.0.2.1/24 dev "$dev_a"
ip -n "$ns_b" addr add 192.0.2.2/24 dev "$dev_b"
ip -n "$ns_a" addr add 2001:db8::1/64 dev "$dev_a" nodad
ip -n "$ns_b" addr add 2001:db8::2/64 dev "$dev_b" nodad
ip -n "$ns_a" link set "$dev_a" up
ip -n "$ns_b" link set "$dev_b" up

# nsenter --net keeps /sys/fs/bpf visible (ip netns exec would hide it).
tm() { echo "$ traffic_meter $*"; nsenter --net="/run/netns/$ns_a" "$work/traffic_meter" "$@" --bpffs-pin "$pin"; }
in_b() { nsenter --net="/run/netns/$ns_b" "$@"; }

tm load --dev "$dev_a"
tm add --ip-address 192.0.2.0/24
tm add --ip-address 192.0.2.2
tm add --ip-address 2001:db8::/64

echo "# sending 10 UDP datagrams over IPv4 and 5 over IPv6 from $ns_b"
for i in $(seq 10); do in_b bash -c 'echo "hello over IPv4" > /dev/udp/192.0.2.1/9'; done
for i in $(seq 5); do in_b bash -c 'echo "hello over IPv6" > /dev/udp/2001:db8::1/9'; done
sleep 0.2

tm list
tm stats
tm stats --json --ip-address 192.0.2.2
tm unload --dev "$dev_a"
