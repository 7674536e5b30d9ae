package maps

// LayoutVersion is the version of the pinned maps' layout that this
// binary writes and reads: the maps' names, types, key and value formats
// and flags. It goes up with every change that makes maps pinned by one
// version unreadable by the other; such maps are refused when opened (see
// checkLayout), and must be unloaded with the version that made them.
// Layout 2 added the address caches and the generation (CacheV4Name);
// layout 3 the rule options in the trie's value (Options) and the maps of
// the breakdowns (FullName ...). A set of an older layout lacks the mark
// of this one (CheckLayout).
const LayoutVersion = 3
