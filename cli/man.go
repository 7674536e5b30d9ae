package cli

import (
	"fmt"

	"github.com/alecthomas/kong"
	mangokong "github.com/alecthomas/mango-kong"
	"github.com/muesli/roff"

	"github.com/traffic-meter/traffic_meter/maps"
)

// ManCmd prints the man page.
type ManCmd struct{}

func (m *ManCmd) unprivileged() {}

// Run prints the man page, in roff: its commands and flags come from the
// same command model as --help.
func (m *ManCmd) Run(c *Context, kctx *kong.Context) error {
	page := mangokong.NewManPage(1, kctx.Model).
		WithLongDescription("traffic_meter attaches an XDP program to network interfaces that counts the packets and bytes "+
			"sent from (out) and to (in) each rule, an IPv4 or IPv6 address or CIDR, the longest matching rule winning. "+
			"The rules and counters live in BPF maps pinned on the BPF filesystem, so they outlast the command; "+
			"every command but exporter, version, completion and man needs root.").
		WithSection("Files", maps.DefaultPinDir+"\n    The default pin directory (--bpffs-pin): the maps, and the attachments under links/.").
		WithSection("Exit Status", "0 on success; 1 on an error, printed as one line on stderr: traffic_meter: error: <problem>: <what to do>.").
		WithSection("See Also", "ip-link(8), bpftool(8), prometheus(1)")
	_, err := fmt.Fprint(c.Stdout, page.Build(roff.NewDocument()))
	return err
}
