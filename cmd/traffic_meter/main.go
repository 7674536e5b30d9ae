// Command traffic_meter counts packets and bytes per IP address or CIDR on
// the network interfaces it is loaded on, with an XDP program. See
// traffic_meter --help, traffic_meter man and the README for its commands.
package main

import (
	"os"

	"github.com/traffic-meter/traffic_meter/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
