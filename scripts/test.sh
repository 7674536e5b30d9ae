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

# ip (iproute2) and nsenter (util-linux) drive the network namespaces;
# strace kills commands at chosen system calls in the crash tests.
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v strace >/dev/null || missing+=(strace)
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -qq
	apt-get install -y -qq "${missing[@]}"
fi

# tests/exporter_test.go scrapes the exporter with a real Prometheus. It
# runs its own prometheus process; the package's service is not needed.
command -v prometheus >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }

if ! mountpoint -q /sys/fs/bpf; then
	mount -t bpf bpf /sys/fs/bpf
fi

# Privileged tests fail rather than skip when they cannot run.
export CI=true
go vet ./...
# The crash-consistency tests of tests/ take several minutes.
go test -timeout 40m ./...
