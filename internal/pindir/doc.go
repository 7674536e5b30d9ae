// Package pindir owns the change of traffic_meter's pin directory: the
// directory on the BPF filesystem that holds the pinned maps (package
// maps) and the pins of the attachments (package attach, in links/).
// It is the one place where the order of a change's steps, what a kill
// at each step leaves and what repairs it are decided.
//
// A change (load, unload, add, del, import, restore) runs in Change. It
// holds the directory's exclusive flock; the readers (list, stats,
// status, save, each reading of stats --watch, each scrape of the
// exporter) run in Read, under the shared flock, over the maps opened
// read-only. A reader therefore sees a change whole or not at all, and
// never a set being created or removed. SIGINT and SIGTERM are the
// commands' business (package cli): they undo what they did, and end the
// change.
//
// Against SIGKILL, crashes and power cuts, a change makes the mark
// "changing" (an empty directory: bpffs holds no regular files) before its
// first step and removes it when it is whole, and orders its steps so that
// a kill after any of them leaves a state that the next change repairs
// when it finds the mark, before its own work. The steps, in order:
//
//	step                                   a SIGKILL after it leaves           who repairs it
//	-------------------------------------  ----------------------------------  ------------------------------------
//	every change:
//	 lock; create the directory, mount     an empty directory                  the next change uses it; its tidy
//	 bpffs at /sys/fs/bpf if need be                                           removes it if still empty
//	 repair (see below the table)          part of the repair, the mark kept   the next change repeats it
//	 mark "changing"                       the mark alone                      the next change: nothing to repair
//	 the generation odd (if the set        the generation odd: the caches      the next change's end
//	 exists: maps.BeginChange)             bypassed, the trie the truth
//	 the command's steps (below)           see below                           see below
//	 the generation even, greater than     a whole change, the caches of       -
//	 any before (maps.EndChange)           the rules now in force
//	 remove the marks                      a whole change                      -
//	 tidy: remove links/ and the           an empty directory                  the next change's tidy
//	 directory if empty
//	create the set (first load, add,
//	import or restore):
//	 create and pin the maps, one by       some maps pinned, not all           repair: unpins them; readers see
//	 one (maps.Names), the mark of the                                         no maps (maps.ErrNotLoaded)
//	 layout first, the generation odd
//	add, import, restore, each new rule:
//	 its stats entry (zero or saved)       a stats entry without a rule        repair: deletes it; readers never
//	                                                                           show it (rules come from the tries)
//	 what its options need (below)         that, without a rule                repair: deletes it
//	 the rule, into its trie, with its     the rule, whole; a re-run of        -
//	 options in its value                  import or restore completes it
//	add or import of a rule that exists,
//	with other options:
//	 what the new options need             that, unused by the rule            the next change of the rule's
//	                                                                           options or its del
//	 the trie value                        the rule with its new options       -
//	 what only the old ones needed, out    that, unused by the rule            the next change of the rule's
//	                                                                           options or its del
//	del, and the undo of import and
//	restore:
//	 the rule out of its trie              a stats entry without a rule        repair: deletes it
//	 its stats entry                       what its options needed             repair: deletes it
//	 what its options needed               -                                   -
//	per interface (--by-interface), what
//	the option needs and leaves:
//	 set: the rows a frame in flight left  -                                   -
//	 under the key, deleted
//	 left: the rule's rows, deleted        rows of a rule without the option   repair: deletes them (RemoveOrphanRows);
//	                                       or of none                          readers show rows of rules with it only
//	restore, after the rules: the rows
//	of the rules it added:
//	 record an attachment marked           a registry entry without rows       repair: removes it (PruneRegistry)
//	 restored, for each identity saved
//	 each row, under it                    some rows: the others' counts in    -
//	                                       their rules' remainders
//	load, each attachment, before the
//	steps below:
//	 load the program with a new number,   a registry entry, no attachment:    repair: removes it if no row carries
//	 record it in the registry             shown unloaded                      it (PruneRegistry)
//	what --hosts N needs, and hosts --clear
//	(maps.HostsV4Name):
//	 make the rule's host table, unpinned  nothing: the table closes with      -
//	 (restore: with its saved rows)        the process
//	 put it into the outer map, in one     the rule's new table; the old       repair: deletes a table whose rule is
//	 update that drops the rule's old one  one's rows in the remainder         gone or lacks the option
//	                                                                           (maps.Set.RemoveHostOrphans)
//	load, XDP or TCX bpf_link:
//	 attach with a new link                nothing: a link not pinned closes   -
//	                                       with the process, detaching
//	 pin the link                          a whole attachment                  -
//	load, XDP through netlink:
//	 pin the program                       a pin of a program attached         every change prunes the pin
//	                                       nowhere                             (attach.Prune); readers ignore it
//	 attach it                             a whole attachment                  -
//	 (an older version attached, then      our program attached, no pin        repair: pins it (attach.Adopt)
//	 pinned)
//	load, TC egress through clsact:
//	 pin the program                       a pin of a program attached         every change prunes the pin
//	                                       nowhere
//	 record, then make, the clsact         that pin, the record, maybe an      every change prunes the pin, deletes
//	 qdisc (if the interface has none)     empty clsact qdisc                  the qdisc it made if no filter is
//	                                                                           on it, and the record
//	 add the cls_bpf filter                a whole attachment                  -
//	unload, each attachment:
//	 detach (TC: the filter, then the      a pin of an attachment that is      every change prunes the pin
//	 clsact qdisc we made if unused)       gone
//	 remove its pin                        -                                   -
//	 after the last, unless the maps go:   -                                   -
//	 remove from the registry the
//	 attachments gone that no row carries
//	unload, after the last attachment
//	(Dir.RemoveIfUnused):
//	 remove links/                         "changing" and a whole set          repair: mends it (nothing to mend);
//	                                                                           the next load makes links/ again
//	 mark "removing"                       the marks and a whole set           repair: "removing" and no attachment:
//	 unpin the maps, one by one, the       the marks and some of the maps      unpins the set; the change's tidy
//	 layout's mark last
//	                                                                           removes the directory
//	 remove the marks, the directory       an empty directory                  the next change's tidy
//
// A removal that fails after its mark "removing" (an unpin refused) keeps
// its marks, as a kill would: the next change completes it.
//
// The generation is the address caches' (maps.CacheV4Name): an entry of a
// cache counts only under the generation it was stored with, and none is
// stored or trusted while the generation is odd, so no frame is counted
// against rules older than the last change that ended, also after a kill.
//
// The repair (repair, its decision in decide) also prunes the pins of
// attachments that are gone when no change was killed: an interface or
// network namespace deleted while loaded. Readers show rules from the
// tries only, so a repair that has not run yet hides nothing that counts
// and shows nothing that does not; while a mark is there, a reader of
// every rule reads the tries, not the stats maps alone
// (maps.Set.NoOrphans).
//
// tests/crash_test.go kills each changing command at each of its bpf,
// mkdirat and unlinkat system calls, and at random times, and checks
// after each kill that the readers agree and that the next change repairs
// everything.
package pindir
