package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/traffic-meter/traffic_meter/internal/attach"
	"github.com/traffic-meter/traffic_meter/internal/exporter"
)

// ExporterCmd serves the counters to Prometheus.
type ExporterCmd struct {
	Listen    string `name:"listen" default:"${default_listen}" placeholder:"ADDR" help:"Address to serve /metrics on (${default})."`
	WebConfig string `name:"web.config.file" placeholder:"FILE" help:"Prometheus web configuration file turning on TLS and basic authentication (https://prometheus.io/docs/prometheus/latest/configuration/https/)."`
	TopHosts  int    `name:"top-hosts" default:"${default_top_hosts}" placeholder:"K" help:"Hosts shown of each rule counted per host (add --hosts N), those with the most bytes, beside its other hosts (${default}): traffic_meter_host_packets_total and traffic_meter_host_bytes_total."`
}

// unprivileged: the exporter needs only to read the pins (see
// scripts/systemd/traffic_meter-exporter.service).
func (e *ExporterCmd) unprivileged() {}

// Run serves /metrics until SIGINT or SIGTERM, reading the maps at every
// scrape; it starts, and keeps serving, whether or not anything is loaded.
func (e *ExporterCmd) Run(c *Context) error {
	if e.TopHosts < 0 {
		return fmt.Errorf("--top-hosts %d is negative: give a number of hosts", e.TopHosts)
	}
	if err := exporter.CheckWebConfig(e.WebConfig); err != nil {
		return fmt.Errorf("--web.config.file %s: %w: fix it (see https://prometheus.io/docs/prometheus/latest/configuration/https/)", e.WebConfig, err)
	}
	// Run as a user, it needs a capability to read root's pins.
	if f, err := os.Open(c.Dir); errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w: run the exporter as root, or with CAP_DAC_OVERRIDE as scripts/systemd/traffic_meter-exporter.service does", err)
	} else if err == nil {
		f.Close()
	}
	l, err := net.Listen("tcp", e.Listen)
	if err != nil {
		return fmt.Errorf("%w: pick another address with --listen HOST:PORT", err)
	}
	if e.WebConfig == "" {
		c.Notice("serving the metrics of %s at http://%s/metrics", c.Dir, l.Addr())
	} else {
		c.Notice("serving the metrics of %s at %s/metrics, with the TLS and authentication of %s", c.Dir, l.Addr(), e.WebConfig)
	}
	log := slog.New(slog.NewTextHandler(c.Stderr, nil))
	interfaces := func() ([]exporter.Interface, error) {
		all, err := attach.List(c.Dir)
		out := make([]exporter.Interface, len(all))
		for i, a := range all {
			d := a.Describe()
			out[i] = exporter.Interface{Name: a.Ifname, Direction: d.Direction, Hook: d.Hook, Mode: d.Mode}
		}
		return out, err
	}
	exp := exporter.New(c.Dir, interfaces, log)
	exp.TopHosts = e.TopHosts
	return exporter.Serve(c.Ctx, l, exporter.Handler(exp, log), e.WebConfig, log)
}
