package cli

import (
	"strings"

	"github.com/traffic-meter/traffic_meter/internal/kernel"
)

// The detailed help of traffic_meter and its commands, which kong prints
// after the one-line help of "traffic_meter CMD --help" and "traffic_meter
// man" renders (see manDoc). Each text is a Go doc comment: paragraphs
// separated by blank lines, indented lists and literal lines.

// Help is what traffic_meter --help says after its one-line help, and the
// man page's description.
func (CLI) Help() string {
	return `traffic_meter attaches a program to network interfaces that counts the packets and bytes sent from (out) and to (in) each rule, an IPv4 or IPv6 address or CIDR, the longest matching rule winning, summed over every interface it is loaded on. It counts what an interface receives with native XDP, or with TC where native XDP is not offered or another XDP program sits (load --mode), and what it sends with TC. Bytes are whole frames, Ethernet header and VLAN tags included, the figure the interface's byte counters use. The program never changes or drops a frame.

The rules and counters live in BPF maps pinned in the pin directory (--bpffs-pin, /sys/fs/bpf/traffic_meter by default, root-only), so they outlast the command. Every command needs root (CAP_BPF and CAP_NET_ADMIN) except exporter, version, man and completion. If no BPF filesystem is mounted at /sys/fs/bpf, the commands that create the pin directory mount one.

add, import and restore create the maps when there are none, so rules can be set before the first load and counting is exact from the first packet; list, stats, save and del need the maps to exist. The maps stay until the last interface is unloaded.

A command that changes the pin directory holds its exclusive lock; readers hold a shared one, so they see a change whole or not at all. SIGINT or SIGTERM during import, restore or load undoes what the command did; after SIGKILL or a crash, the next change repairs what was left first, with a notice.`
}

// Help is what load --help says after its one-line help.
func (LoadCmd) Help() string {
	return strings.NewReplacer("${linux_xdp_link}", kernel.XDPLink.Version, "${linux_tcx}", kernel.TCX.Version).Replace(loadHelp)
}

// loadHelp is LoadCmd's Help, with the kernel releases of its fallbacks
// as ${...} variables.
const loadHelp = `Attaches the program to the interface IF, in the caller's network namespace. The attachment outlives the command: it is pinned in DIR/links/. The first load creates the maps, holding --max-rules rules per address family (by default a stats table takes memory as rules are added; with --prealloc it is reserved up front); later loads on other interfaces share them, so all counts are summed. Loading an interface that is loaded already is nothing to do.

  - --direction: ingress (the default) counts what IF receives, with XDP or TC (--mode); egress counts what it sends, with TC; both does both. If one direction of both fails, the other is undone. A router that loads ingress on the interface a frame arrives on and egress on the one it leaves by counts that frame twice: for forwarded traffic, load one direction on every interface, or use two pin directories.
  - --mode: the ingress hook. auto (the default) takes native XDP where the driver offers it and IF carries no other XDP program, else TC ingress, and says which and why in a notice. native XDP runs in the driver, before GRO: exact per frame, and cheapest. tc counts after GRO, each GRO aggregate as the segments it was built from, with their headers: exact as well, on any interface (a bridge, bond, VLAN device, a NIC without native XDP), beside any other program. generic XDP runs after the GRO of the devices below IF (a bridge sees its ports' aggregates, one packet each) and makes the kernel skip GRO on IF, which slows its TCP receive: only when asked. Forcing native or generic where another XDP program sits refuses, naming it; auto counts behind it with TC, which does not see what that program drops or redirects.
  - --attach: on kernels without XDP bpf_links (before ${linux_xdp_link}) the program is attached through netlink instead, with a notice, and pinned so that traffic_meter still knows where it is loaded; netlink forces that path, link forbids it.
  - --tc: a TC program (egress, and ingress with TC) is a TCX bpf_link (Linux ${linux_tcx}, pinned) where the kernel has TCX, else a direct-action cls_bpf filter on a clsact qdisc; clsact forces that path, tcx forbids it. Either way the other programs and filters on the hook still run, and traffic_meter never deletes a qdisc, filter or program that is not its own.
  - --object F: loads the XDP program of section xdp of the BPF ELF file F instead of the built-in one. It must use maps named rules_v4, rules_v6, stats_v4 and stats_v6 of traffic_meter's layout; they are replaced by the pinned maps.

Egress counts what goes on the wire: a GSO packet as its segments, each with its own headers, and a VLAN tag the packet carries out of band (4 bytes a frame). On receive, XDP counts a VLAN tag only if it is in the frame, so a NIC that strips tags gives 4 bytes a frame less.

Loading a device and a device stacked on it (a bridge and its port, a VLAN device and its parent) in the same direction counts a frame twice: load warns, and status shows it. A loaded interface that is deleted leaves a stale pin, which the next command that looks at the attachments removes. SIGINT or SIGTERM during load undoes it.`

// Help is what unload --help says after its one-line help.
func (UnloadCmd) Help() string {
	return `Detaches the program from IF only, in every direction loaded on it or in the one --direction names; the other interfaces keep counting. After the last attachment, the maps, with their rules and counters, and the pin directory are removed: save the counters first to keep them.

Like load, it is idempotent: an interface that is not loaded is nothing to do (exit 0), so a re-run of an interrupted unload, or a systemd ExecStop=, succeeds. An interface that was deleted while loaded is unloaded by its name all the same: its stale attachment goes, and the maps with it if it was the last.

--all detaches every attachment the pin directory knows, in any network namespace (it enters the namespace where it must), vanished interfaces included, then removes the maps and the directory.`
}

// Help is what status --help says after its one-line help.
func (StatusCmd) Help() string {
	return `Shows the pin directory, the rules per address family and the capacity, the kind of the stats tables (preallocated with --prealloc, or taking memory per rule) and the kernel memory they reserve, every attachment, and the kernel fallbacks in use, each with what it costs. An attachment is shown with its interface, its network namespace (by inode, as ls -iL /proc/PID/ns/net shows it), its direction, its hook (xdp or tc), its XDP mode or TC path (tcx or clsact), how it is attached (bpf_link or netlink) and its program id. Two attachments in the same direction on devices stacked one on the other (a bridge and its port, a VLAN device and its parent), which count a frame twice, are shown on a line of their own (stacked in --json). With nothing loaded it says so and exits 0.`
}

// Help is what add --help says after its one-line help.
func (AddCmd) Help() string {
	return `A rule is an IPv4 or IPv6 address (a /32 or /128 rule) or a network in CIDR notation, checked strictly: address syntax (no leading zeros in IPv4), prefix length in range, host bits zero (10.0.0.1/24 is refused, naming 10.0.0.0/24). IPv6 zones (fe80::1%eth0) are refused, and so are IPv4-mapped IPv6 addresses (::ffff:10.0.0.1): IPv4 packets are counted by IPv4 rules, so such a rule would never match them, and the error names the IPv4 form to use instead.

add creates the rule's zero counters before the rule, so the program never matches a rule it cannot count. Adding a rule again keeps its counters. When there are no maps, add creates them, holding --max-rules rules per address family.

--by-interface and --hosts N are the rule's options: breakdowns of its total kept beside it (see stats --by-interface and stats --hosts). Adding a rule that exists with other options changes its options and keeps its counters; adding it without any removes them. A rule without options costs the program nothing more; its total is the same with or without them. Whatever a breakdown has no row for (what the rule counted before the option was set, a frame that found the breakdown's table full) is in its remainder: the total less the rows.`
}

// Help is what del --help says after its one-line help.
func (DelCmd) Help() string {
	return `Deletes the rule, then its counters. The rule is named exactly, as list shows it, not by longest-prefix match; a rule that does not exist is an error. Deleting a rule and adding it again starts it from zero.`
}

// Help is what import --help says after its one-line help.
func (ImportCmd) Help() string {
	return `The file must be a JSON array of strings, each a rule as add takes it. It is read in full, streaming, before anything is added: an unreadable file, invalid JSON anywhere or a root that is not an array is an error, and nothing is added. Invalid items are skipped with one warning each, naming the item's index in the array (from 0) and the reason. Duplicates are fine, and rules that exist already keep their counters. A summary line counts the rules imported, the new ones among them and the items skipped.

The rules are then added in batches, all or nothing: if the maps fill up, or SIGINT or SIGTERM arrives, the rules this import added are removed again, and it exits 1 saying so. After SIGKILL some of its rules are left, each counting; running the import again completes it. When there are no maps, import creates them.

--by-interface and --hosts N set the options of every rule of the file, as add sets them: new rules get them, and rules that exist and have other options change to them, their counters kept (without either flag, such rules lose their options).`
}

// Help is what list --help says after its one-line help.
func (ListCmd) Help() string {
	return `Prints every rule in canonical CIDR form, IPv4 then IPv6, each sorted by address and then prefix length, and after a rule with options its options in parentheses, as add sets them: 10.1.0.0/16 (by-interface, hosts 1000). --json lists the rules as strings in "rules" and the options of the rules that have any in "options", by rule.`
}

// Help is what stats --help says after its one-line help.
func (StatsCmd) Help() string {
	return `Per rule: the total packets and bytes (in + out), then in (the destination matched) and out (the source matched), summed over the CPUs. A packet whose source and destination both fall in one rule counts once as in and once as out. Bytes are shown in B below 1 KiB, else in KiB, MiB, GiB or TiB with one decimal. --json prints exact integers, one rule a line, each as {"rule":R,"packets":N,"bytes":N,"in":{...},"out":{...}}, in and out each holding "packets" and "bytes", all in {"rules":[...]}.

--ip-address X shows exactly the rule X, not the longest matching one: if 10.0.0.0/24 is a rule, --ip-address 10.0.0.9 is an error naming 10.0.0.9/32 as no rule.

--watch is a live view, redrawn in place every --interval until Ctrl-C: a header line with the time, the number of rules and the loaded interfaces, then per rule its total, in and out counters and its current rates, packets/s and bits/s (kbit/s, Mbit/s, Gbit/s), measured between the last two readings. Rows are sorted by rate, largest first; on a terminal only as many as fit are shown. On a pipe or file, one block is printed per interval, each ended by a blank line. Rules added or deleted meanwhile appear and go; a rule first seen has no rate yet (-), and a rule whose counters went backwards (deleted and added again) shows reset rather than a negative rate.

--sort and --top work with or without --watch: without it, --sort bytes and --sort packets order the plain (or --json) output by total, and --sort rate reads twice, --interval apart, and prints the --watch view once. --json has no rates, so it goes with neither --watch nor --sort rate.

--hosts --ip-address X shows the hosts of the rule X, added with --hosts N: one row per host, then other hosts, the rest of the rule's total, so that the rows add up to it exactly. --sort bytes|packets ranks the hosts (by address without), --top N shows the first N (the others are in other hosts), --json prints {"rule":X,"hosts_capacity":N,"packets":N,...,"hosts":[{"host":A,"packets":N,...}],"other":{...}}, and --watch or --sort rate shows their rates, other hosts ranked among them.`
}

// Help is what exporter --help says after its one-line help.
func (ExporterCmd) Help() string {
	return `Serves the counters at /metrics until SIGINT or SIGTERM, reading the pinned maps at each scrape and never in between. It starts and keeps serving whether or not anything is loaded: while the maps are gone it reports no rules, and the new counters once they are back. A scrape streams, under the pin directory's shared lock, so the exporter's memory does not grow with the rules.

  - traffic_meter_packets_total, traffic_meter_bytes_total: counters of a rule (label rule) in one direction (label direction, in or out).
  - traffic_meter_host_packets_total, traffic_meter_host_bytes_total: for each rule counted per host (add --hosts N), the counters of its --top-hosts hosts with the most bytes (label host) and of its other hosts (host="other", the rule's total less all its hosts), in one direction; a host below the top is in neither.
  - traffic_meter_rules: the rules of an address family (label family, ipv4 or ipv6).
  - traffic_meter_interface_info: 1 for each attachment (labels interface, direction, hook and mode).
  - traffic_meter_maps_loaded: 1 if the maps exist, 0 if nothing is loaded.
  - traffic_meter_scrape_error: 1 if reading the maps or interfaces failed (see the log on stderr).
  - traffic_meter_scrape_duration_seconds: the time taken to read the maps and build this scrape.

--listen is loopback only by default; its port, 19864, is outside the ranges the Prometheus project hands out to exporters. Per-rule traffic says who talks to whom: off loopback, give --web.config.file, the web configuration file of the Prometheus exporters, which turns on TLS and basic authentication. The file is checked at start and read again at each new connection, so a renewed certificate or a changed password needs no restart.

The exporter needs no root, only to open the pins: run it as root or with CAP_DAC_OVERRIDE, as the systemd unit scripts/systemd/traffic_meter-exporter.service does.`
}

// Help is what save --help says after its one-line help.
func (SaveCmd) Help() string {
	return `The counters live only in the pinned maps: the last unload removes them, a reboot empties the BPF filesystem, and an upgrade that changes the map layout starts from zero. save writes every rule with its counters to a file, and restore brings them back.

The file is JSON, one rule a line, with exact unsigned 64-bit integers: "version" (1), "saved_at" (the UTC time of the reading, RFC 3339) and "rules", every rule, IPv4 then IPv6, with its "in" and "out" "packets" and "bytes", as stats --json shows them.

save reads the rules and counters under the pin directory's shared lock, so the file is one consistent reading, and writes it atomically: into a temporary file in the same directory, synced to disk, renamed over F, and the directory synced. Whenever save is stopped, SIGKILL and power cuts included, F is the previous file, whole, or the new one; the next save removes the temporary file a killed one left. A new file is readable by root only; a file replaced keeps its permission bits.`
}

// Help is what restore --help says after its one-line help.
func (RestoreCmd) Help() string {
	return `Reads the whole file first, streaming, then adds its rules, creating the maps if there are none, as import does:

  - a rule that is absent starts from its saved counters: they are written before the rule enters its trie, so a packet that arrives during the restore is counted once, by a wider rule before and on top of the saved counters after, and never lost;
  - a rule that is present keeps counting untouched, with a warning (one per rule, or one counting them when there are more than ten);
  - an invalid item (a bad rule or host bits, a count that is negative, fractional, beyond 18446744073709551615 or not a number, a missing field) is skipped with a warning naming its index (from 0) and the reason, and so is a later item repeating a rule (the first counts).

A summary line ends. It is all or nothing, as import: an unreadable file, invalid JSON anywhere (a truncated file included), a missing or unknown version or no rules array is an error, and nothing is added; a full map, or SIGINT or SIGTERM during the restore, removes the rules it had added again, and it exits 1 saying so. Restored counters continue from their saved values, which Prometheus reads as an ordinary increase.`
}

// Help is what version --help says after its one-line help.
func (VersionCmd) Help() string {
	return `Tells which build is on a host and whether it matches the pinned maps and the kernel. The map layout is the format of the pinned maps this binary writes and reads: two binaries of the same layout share the maps; maps of another layout are refused. To upgrade across layouts without losing counts, save and unload --all with the old binary, then load and restore with the new one. The kernel's features are probed, which needs root: as another user the features line says so.`
}

// Help is what completion --help says after its one-line help.
func (CompletionCmd) Help() string {
	return `The script calls this binary back, by its absolute path (so install it first), to complete commands, flags, interface names for --dev, the rules in the pinned maps for del and stats --ip-address (when the user may read them, that is as root), and files for --file, --object and --web.config.file.`
}
