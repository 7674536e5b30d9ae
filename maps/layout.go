package maps

// LayoutVersion is the version of the pinned maps' layout that this
// binary writes and reads: the maps' names, types, key and value formats
// and flags. It goes up with every change that makes maps pinned by one
// version unreadable by the other; such maps are refused when opened (see
// checkLayout), and must be unloaded with the version that made them.
// Layout 2 added the address caches and the generation (CacheV4Name); a
// set of layout 1 lacks them (CheckLayout).
const LayoutVersion = 2
