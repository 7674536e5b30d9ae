package maps

// TEMPORARY until branch options lands: the foundation's names this branch uses.

const ByInterfaceBit = 1 << 8

const (
	FullName         = "breakdown_full"
	FullInterfacesV4 = 0
	FullInterfacesV6 = 1
)
