#!/usr/bin/env bash
# Runs the test suite on the kernels people have: the cloud kernels of
# Debian 11 (bullseye, 5.10), 12 (bookworm, 6.1) and 13 (trixie, 6.12),
# each booted under qemu, and on this machine's own kernel. Prints one
# table (kernel, package version, tests passed and failed, fallbacks in
# use) and exits non-zero if any test failed anywhere.
#
# The kernel packages are fetched with apt-get download through a private
# apt configuration (its own sources list, state and cache under the cache
# directory): the machine's apt sources are never changed. What the script
# itself needs (qemu, busybox-static, kmod, xz-utils, cpio) comes from the
# machine's own sources when missing.
#
# Each guest boots from a busybox initramfs holding the static traffic_meter
# binary, the static `go test -c` binaries of kernel, prog, maps, attach and
# tests, the real ip and nsenter with their shared libraries, and the veth,
# sch_ingress and cls_bpf modules of the same package. The guest runs the
# test binaries with CI=true and prints their output on its serial console
# between markers, which this script reads back.
#
# Run as root from anywhere: sudo ./scripts/kernels.sh
#
# Environment:
#   KERNELS_CACHE   download cache, reusable across runs and by CI
#                   (default /var/cache/traffic_meter-kernels)
#   KERNELS         releases to boot (default "bullseye bookworm trixie")
#   KERNELS_JOBS    guests booted at a time (default: the number of CPUs)
#   KERNELS_HOST    set to 0 to skip the host row
#   GUEST_TIMEOUT   seconds a guest may run before it is stopped (default 2100)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
	echo "kernels.sh: the tests load BPF programs: run it as root: sudo $0" >&2
	exit 1
fi
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"

cache=${KERNELS_CACHE:-/var/cache/traffic_meter-kernels}
releases=${KERNELS:-bullseye bookworm trixie}
jobs=${KERNELS_JOBS:-$(nproc)}
guest_timeout=${GUEST_TIMEOUT:-2100}

# The end-to-end tests the kernels run: all but those that test nothing
# of the kernel's, need a tool the initramfs does not hold, or would take
# most of the CI budget emulated. TestPrometheus and TestPromtoolCheck
# need Prometheus and promtool: the exporter's HTTP side and the rule
# files, the same on every kernel. TestExporterMemory measures the
# exporter's memory over a million rules: minutes emulated, and Go's, not
# the kernel's. TestWatchPipe and TestWatchTerminal check the rates
# stats --watch shows against wall-clock time within 25%, which an
# emulated guest's timing does not keep; the stats they read are those
# every other test checks exactly. TestCrash and TestSignalRollback kill
# commands at chosen system calls under strace: the control plane's
# rollback and repair, over ten minutes on this 2-core host already.
# TestAlertRules, TestCompletion, TestManPage, TestSystemdUnit,
# TestUnprivilegedExporter and TestSecureExporter need promtool, bash,
# man, systemd-analyze, Prometheus or the repository's files, and so do
# TestUnits and TestBootScript (systemd-analyze, scripts/systemd). Of the
# egress tests, TestWire counts skbs with a TCX program of its own (Linux
# 6.6); TestForeignFilter, TestClsactOurs, TestKilledClsactLoad and
# TestUnloadAllEgress need iproute2's tc (busybox has no clsact); TestEgressVLAN tags frames with a TCX program of its own
# where the kernel has no 8021q module. The egress program and both TC
# paths still run on every kernel: the prog table, attach's TestAttachTC,
# TestEgressUDP, TestDirections and TestVanishedEgress. TC ingress runs
# everywhere, clsact on 5.10 and 6.1, TCX on 6.12: the guests hold the
# bridge module and ethtool for TestBridgeIngress and TestTCIngressGRO
# (GRO on a veth), and TestForeignXDP needs neither.
# TestReaderChurn (a writer making and removing the whole set while
# readers loop: the lock's work, 274 s on the 5.10 guest) is left out
# too; the fallbacks it passes through (key-by-key reads before 5.13) are
# those of TestImport, TestCount and the save tests, which run.
# scripts/test.sh runs them all on the host, and the host row here runs
# the same selection as the guests, from the same binaries.
guest_skip='^(TestReaderChurn|TestPrometheus|TestPromtoolCheck|TestExporterMemory|TestWatchPipe|TestWatchTerminal|TestCrash|TestSignalRollback|TestAlertRules|TestCompletion|TestManPage|TestSystemdUnit|TestUnprivilegedExporter|TestSecureExporter|TestUnits|TestBootScript|TestWire|TestForeignFilter|TestClsactOurs|TestKilledClsactLoad|TestUnloadAllEgress|TestEgressVLAN)$'

work=$(mktemp -d /tmp/traffic_meter-kernels.XXXXXX)
cleanup() {
	# Stop the guests this script started, by their PIDs.
	for f in "$work"/*.qemu.pid; do
		[ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

# What the script needs, from the machine's own apt sources.
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v modinfo >/dev/null || need+=(kmod)
command -v xz >/dev/null || need+=(xz-utils)
command -v cpio >/dev/null || need+=(cpio)
if [ ${#need[@]} -gt 0 ]; then
	echo "kernels.sh: installing ${need[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# apt_private RELEASE ARGS...: apt-get with a configuration of the
# release's own, under the cache directory.
apt_private() {
	local rel=$1 dir=$cache/apt/$1
	shift
	mkdir -p "$dir/state/lists/partial" "$dir/cache/archives/partial" "$dir/sources.list.d"
	touch "$dir/status"
	# The release's own kernel, from its last point release: the archive's
	# main suite.
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $rel main" >"$dir/sources.list"
	"$@" -q -o Dir::Etc::sourcelist="$dir/sources.list" -o Dir::Etc::sourceparts="$dir/sources.list.d" \
		-o Dir::Etc::preferences=/dev/null -o Dir::Etc::preferencesparts="$dir/sources.list.d" \
		-o Dir::State="$dir/state" -o Dir::State::status="$dir/status" \
		-o Dir::Cache="$dir/cache" -o APT::Architecture=amd64 -o APT::Sandbox::User=root \
		-o Debug::NoLocking=true
}

# fetch RELEASE: downloads the release's newest cloud kernel package into
# the cache, and prints its path.
fetch() {
	local rel=$1 image pkg deb
	mkdir -p "$cache/debs"
	if ! apt_private "$rel" apt-get update >"$work/$rel.apt.log" 2>&1; then
		# Offline: the package this release used last time, if any.
		if [ -f "$cache/debs/$rel.current" ]; then
			echo "kernels.sh: cannot reach Debian's archive for $rel: using the cached package" >&2
			cat "$cache/debs/$rel.current"
			return
		fi
		cat "$work/$rel.apt.log" >&2
		return 1
	fi
	# The meta package depends on the versioned image package.
	image=$(apt_private "$rel" apt-cache depends linux-image-cloud-amd64 2>>"$work/$rel.apt.log" |
		awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	if [ -z "$image" ]; then
		echo "kernels.sh: no linux-image-cloud-amd64 in $rel" >&2
		return 1
	fi
	pkg=$image-unsigned
	apt_private "$rel" apt-cache show "$pkg" >/dev/null 2>&1 || pkg=$image
	deb=$(ls "$cache/debs/${pkg}_"*.deb 2>/dev/null | tail -1 || true)
	if [ -z "$deb" ]; then
		(cd "$cache/debs" && apt_private "$rel" apt-get download "$pkg" >>"$work/$rel.apt.log" 2>&1) || {
			cat "$work/$rel.apt.log" >&2
			return 1
		}
		deb=$(ls "$cache/debs/${pkg}_"*.deb | tail -1)
	fi
	echo "$deb" >"$cache/debs/$rel.current"
	echo "$deb"
}

# Static binaries: traffic_meter and the test binaries.
bins=$work/bins
mkdir -p "$bins"
# Each test binary is named for its package and runs in the package's
# directory (NAME:DIR), as go test runs it.
pkgs=(kernel:internal/kernel prog:prog maps:maps attach:internal/attach tests:tests)
export CGO_ENABLED=0
go build -o "$bins/traffic_meter" ./cmd/traffic_meter
for p in "${pkgs[@]}"; do
	go test -c -o "$bins/${p%%:*}.test" "./${p#*:}"
done

# copy_with_libs ROOT BIN...: copies binaries into ROOT at their own paths,
# with the shared libraries they load.
copy_with_libs() {
	local dest=$1 f
	shift
	for f in "$@" $(ldd "$@" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}' | sort -u); do
		mkdir -p "$dest$(dirname "$f")"
		cp -L "$f" "$dest$f"
	done
}

# initramfs RELEASE DEB: builds the release's initramfs; prints the paths
# of its kernel and initramfs.
initramfs() {
	local rel=$1 deb=$2 x=$work/$1 rootfs=$work/$1/rootfs mods m
	mkdir -p "$x/pkg" "$rootfs"/{bin,dev,proc,sys,tmp,run,root,modules,tm}
	dpkg-deb -x "$deb" "$x/pkg"
	# /lib/modules, or /usr/lib/modules from Debian 13 on.
	for mods in "$x"/pkg/lib/modules/*/kernel "$x"/pkg/usr/lib/modules/*/kernel; do
		[ -d "$mods" ] && break
	done
	# The modules the tests need, each after the ones it depends on.
	: >"$rootfs/modules/order"
	add_module() {
		local name=$1 file d
		grep -qx "$name.ko" "$rootfs/modules/order" && return 0
		file=$(find "$mods" -name "$name.ko" -o -name "$name.ko.xz" | head -1)
		if [ -z "$file" ]; then
			# Built in, or the tests that need it fail.
			echo "kernels.sh: no module $name in $(basename "$deb")" >&2
			return 0
		fi
		for d in $(modinfo -F depends "$file" | tr , ' '); do
			add_module "$d"
		done
		case $file in
		*.xz) xz -dc "$file" >"$rootfs/modules/$name.ko" ;;
		*) cp "$file" "$rootfs/modules/$name.ko" ;;
		esac
		echo "$name.ko" >>"$rootfs/modules/order"
	}
	for m in veth sch_ingress cls_bpf bridge; do
		add_module "$m"
	done

	cp /bin/busybox "$rootfs/bin/busybox"
	copy_with_libs "$rootfs" "$(command -v ip)" "$(command -v nsenter)" "$(command -v ethtool)"
	cp "$bins"/* "$rootfs/tm/"
	# The files some tests read beside their package, at the same paths
	# under /src: the golden listings of prog and the feature table of
	# docs/kernels.md that kernel's test compares with the code.
	mkdir -p "$rootfs/src/prog" "$rootfs/src/docs"
	cp -r prog/testdata "$rootfs/src/prog/"
	cp docs/kernels.md "$rootfs/src/docs/"
	cat >"$rootfs/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
# The real ip and nsenter come first: the tests run them by name.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t devtmpfs dev /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
for m in \$(cat /modules/order); do insmod /modules/\$m || echo "insmod \$m failed"; done
$(command -v ip) link set lo up
export CI=true HOME=/root TMPDIR=/tmp TRAFFIC_METER_BIN=/tm/traffic_meter
echo "@@TM-KERNEL \$(uname -r)"
for p in ${pkgs[*]}; do
	t=\${p%%:*}
	args=""
	[ \$t = tests ] && args="-test.skip $guest_skip"
	echo "@@TM-BEGIN \$t"
	mkdir -p /src/\${p#*:} && cd /src/\${p#*:}
	/tm/\$t.test -test.v -test.timeout 20m \$args 2>&1
	echo "@@TM-END \$t \$?"
done
echo "@@TM-DONE"
sync
reboot -f
EOF
	chmod +x "$rootfs/init"
	(cd "$rootfs" && find . | cpio -o -H newc --quiet | gzip -1) >"$x/initramfs.gz"
	echo "$(ls "$x"/pkg/boot/vmlinuz-*) $x/initramfs.gz"
}

# accel: KVM where it boots a guest, else TCG on one thread (a
# multi-threaded TCG guest has crashed). The check boots a kernel with no
# init, which panics, which ends qemu (-no-reboot, panic=-1).
accel() {
	if [ -w /dev/kvm ] && timeout 120 qemu-system-x86_64 -accel kvm -cpu max -m 256 -display none \
		-no-reboot -monitor none -serial none -kernel "$1" -append "panic=-1 rdinit=/none" \
		</dev/null >/dev/null 2>&1; then
		echo "-accel kvm"
	else
		echo "-accel tcg,thread=single"
	fi
}

# boot RELEASE KERNEL INITRAMFS: boots a guest and leaves its console in
# $work/RELEASE.log.
boot() {
	local rel=$1 kernel=$2 initrd=$3
	echo "kernels.sh: booting $rel ($accel)" >&2
	timeout "$guest_timeout" qemu-system-x86_64 $accel -cpu max,cx16=off -smp 2 -m 2048 \
		-display none -no-reboot -monitor none -serial "file:$work/$rel.log" \
		-kernel "$kernel" -initrd "$initrd" \
		-append "console=ttyS0 panic=-1 quiet loglevel=3" \
		-pidfile "$work/$rel.qemu.pid" </dev/null >"$work/$rel.qemu.log" 2>&1 || true
}

# summarize NAME VERSION LOG: prints the table row of a test log with
# markers.
summarize() {
	local name=$1 version=$2 log=$3
	awk -v name="$name" -v version="$version" '
		{ sub(/\r$/, "") }
		/^@@TM-KERNEL / { kernel = $2 }
		/^@@TM-BEGIN / { in_bin = $2; fails = 0; next }
		/^@@TM-END / {
			# A binary that died without reporting a failure (panic,
			# timeout) counts as one failed test.
			if ($3 != 0 && fails == 0) { failed++; bad = bad " " $2 }
			ran[$2] = 1; in_bin = ""; next
		}
		/^@@TM-DONE/ { done = 1 }
		in_bin != "" && /^--- PASS/ { passed++ }
		in_bin != "" && /^--- FAIL/ { failed++; fails++; bad = bad " " in_bin "." $3 }
		in_bin != "" && /^--- SKIP/ { skipped++ }
		in_bin == "kernel" && /fallback [a-z-]+:/ {
			for (i = 1; i <= NF; i++) if ($i == "fallback") { f = $(i + 1); sub(/:$/, "", f); fb = fb (fb ? "," : "") f }
		}
		END {
			if (!done) { failed++; bad = bad " (guest did not finish)" }
			printf "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", kernel ? kernel : name, version, passed, failed, skipped, fb ? fb : "none", bad
		}' "$log"
}

rows=$work/rows
: >"$rows"

start=$(date +%s)
declare -A debs
for rel in $releases; do
	debs[$rel]=$(fetch "$rel") || {
		printf '%s\t%s\t0\t1\t0\t-\t%s\n' "$rel" "-" "(download failed)" >>"$rows"
		unset "debs[$rel]"
	}
done

# run_release RELEASE: builds the release's initramfs, boots it, and adds
# its row.
run_release() {
	local rel=$1 deb=${debs[$1]} files
	files=$(initramfs "$rel" "$deb")
	boot "$rel" $files
	summarize "$rel" "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" "$work/$rel.log" >>"$rows"
}

accel=
for deb in "${debs[@]}"; do
	mkdir -p "$work/accel"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/accel" --wildcards './boot/vmlinuz-*'
	accel=$(accel "$work"/accel/boot/vmlinuz-*)
	break
done
running=0
for rel in $releases; do
	[ -n "${debs[$rel]:-}" ] || continue
	run_release "$rel" &
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		wait -n || true
		running=$((running - 1))
	fi
done

# The host row: the same binaries and tests on this machine's kernel.
if [ "${KERNELS_HOST:-1}" != 0 ]; then
	if ! mountpoint -q /sys/fs/bpf; then
		mount -t bpf bpf /sys/fs/bpf
	fi
	(
		export CI=true TRAFFIC_METER_BIN=$bins/traffic_meter
		echo "@@TM-KERNEL $(uname -r)"
		for p in "${pkgs[@]}"; do
			t=${p%%:*}
			echo "@@TM-BEGIN $t"
			rc=0
			args=()
			[ "$t" = tests ] && args=(-test.skip "$guest_skip")
			(cd "$root/${p#*:}" && "$bins/$t.test" -test.v -test.timeout 20m "${args[@]}" 2>&1) || rc=$?
			echo "@@TM-END $t $rc"
		done
		echo "@@TM-DONE"
	) >"$work/host.log" 2>&1
	summarize host "host (this machine)" "$work/host.log" >>"$rows"
fi
wait
elapsed=$(($(date +%s) - start))

echo
printf '%-28s %-52s %6s %6s %7s  %s\n' kernel package passed failed skipped "fallbacks in use"
sort "$rows" | while IFS=$'\t' read -r kernel version passed failed skipped fb bad; do
	printf '%-28s %-52s %6s %6s %7s  %s\n' "$kernel" "$version" "$passed" "$failed" "$skipped" "$fb"
	[ -z "$bad" ] || echo "    failed:$bad"
done
echo "kernels.sh: $(echo $releases | wc -w) guests and the host in ${elapsed}s"

if awk -F'\t' '$4 != 0 { bad = 1 } END { exit !bad }' "$rows"; then
	# The console of each guest that failed, from its first failure on.
	for rel in $releases host; do
		log=$work/$rel.log
		[ -f "$log" ] || continue
		if grep -aq -- '--- FAIL\|@@TM-END [a-z]* [1-9]' "$log" || ! grep -aq '@@TM-DONE' "$log"; then
			echo "== $rel:"
			if grep -aq -- '--- FAIL' "$log"; then
				grep -a -B2 -A20 -- '--- FAIL' "$log" | head -100
			else
				tail -60 "$log"
				[ -s "$work/$rel.qemu.log" ] && cat "$work/$rel.qemu.log"
			fi
		fi
	done
	exit 1
fi
