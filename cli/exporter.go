package cli

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/traffic-meter/traffic_meter/attach"
	"github.com/traffic-meter/traffic_meter/exporter"
)

// ExporterCmd serves the counters to Prometheus.
type ExporterCmd struct {
	Listen string `name:"listen" default:"${default_listen}" placeholder:"ADDR" help:"Address to serve /metrics on (${default})."`
}

// Run serves /metrics until SIGINT or SIGTERM, reading the maps at every
// scrape; it starts, and keeps serving, whether or not anything is loaded.
func (e *ExporterCmd) Run(c *Context) error {
	l, err := net.Listen("tcp", e.Listen)
	if err != nil {
		return fmt.Errorf("%v: pick another address with --listen HOST:PORT", err)
	}
	c.Notice("serving the metrics of %s at http://%s/metrics", c.Dir, l.Addr())
	log := slog.New(slog.NewTextHandler(c.Stderr, nil))
	interfaces := func() ([]exporter.Interface, error) {
		all, err := attach.List(c.Dir)
		out := make([]exporter.Interface, len(all))
		for i, a := range all {
			out[i] = exporter.Interface{Name: a.Ifname, Direction: string(a.Direction), Mode: string(a.Mode)}
			if a.Direction == attach.Egress {
				out[i].Mode = string(a.TC)
			}
		}
		return out, err
	}
	exp := exporter.New(c.Dir, interfaces, log)
	return exporter.Serve(c.Ctx, l, exporter.Handler(exp, log))
}
