#!/usr/bin/env bash
# Runs every test, as root: installs what the tests need, mounts the BPF
# filesystem if it is missing, then runs go vet and go test. The
# end-to-end tests make their own network namespaces and veth pairs and
# remove them. Run from anywhere: sudo ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "test.sh: the tests load XDP programs: run it as root: sudo $0" >&2
	exit 1
fi
export PATH="$PATH:/usr/local/go/bin"

# ip and tc (iproute2) and nsenter (util-linux) drive the network
# namespaces; strace kills commands at chosen system calls in the crash
# tests; ethtool turns offloads on and off and ping crosses a veth pair in
# the egress tests; setpriv and unshare (util-linux) run the exporter
# unprivileged; systemd-analyze (systemd) verifies its unit; man (man-db)
# and groff (groff-base) render the man page; bash, zsh and fish run the
# completion scripts.
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v tc >/dev/null || missing+=(iproute2)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v ethtool >/dev/null || missing+=(ethtool)
command -v ping >/dev/null || missing+=(iputils-ping)
command -v strace >/dev/null || missing+=(strace)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v man >/dev/null || missing+=(man-db)
command -v groff >/dev/null || missing+=(groff-base)
command -v zsh >/dev/null || missing+=(zsh)
command -v fish >/dev/null || missing+=(fish)
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# tests/exporter_test.go scrapes the exporter with a real Prometheus (it
# runs its own prometheus process; the package's service is not needed),
# and tests/alerts_test.go runs the package's promtool on the alert rules.
command -v prometheus >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }

if ! mountpoint -q /sys/fs/bpf; then
	mount -t bpf bpf /sys/fs/bpf
fi

# Privileged tests fail rather than skip when they cannot run.
export CI=true
go vet ./...
# The crash-consistency tests of tests/ take several minutes.
go test -timeout 40m ./...
