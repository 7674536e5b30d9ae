package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	"github.com/traffic-meter/traffic_meter/internal/pindir"
	"github.com/traffic-meter/traffic_meter/internal/rule"
	"github.com/traffic-meter/traffic_meter/maps"
)

// AddCmd adds a rule.
type AddCmd struct {
	IPAddress string `name:"ip-address" required:"" placeholder:"X" help:"IPv4/IPv6 address or CIDR, such as 10.0.0.0/24 or 2001:db8::1."`
	RuleOptions
	Capacity
}

// RuleOptions are the flags that set a rule's options (maps.Options).
type RuleOptions struct {
	ByInterface bool   `name:"by-interface" help:"Also count the rule per attachment (interface, network namespace, direction and hook): see 'stats --by-interface'. Its total stays the sum over every interface."`
	Hosts       uint32 `name:"hosts" placeholder:"N" help:"Also count each address of the rule that a counted frame carries, exactly, up to N addresses; the others count in the rule's remainder: see 'stats --hosts'."`
}

// options returns the options the flags ask for.
func (o RuleOptions) options() maps.Options {
	return maps.Options{ByInterface: o.ByInterface, Hosts: o.Hosts}
}

// Run adds the rule, creating the maps if nothing is loaded yet.
func (a *AddCmd) Run(c *Context) error {
	r, err := rule.Parse(a.IPAddress)
	if err != nil {
		return err
	}
	return c.change(true, func(d *pindir.Dir) error {
		return c.withMaps(d, a.Capacity, nil, func(set *maps.Set) error {
			o := a.options()
			added, changed, err := set.Add(r, o)
			switch {
			case err != nil:
				return err
			case added:
				fmt.Fprintf(c.Stdout, "added %s\n", maps.Listed{Rule: r, Options: o})
			case changed:
				fmt.Fprintf(c.Stdout, "%s is a rule already: kept its counters, options now %s\n", r, cmp.Or(o.String(), "none"))
			default:
				fmt.Fprintf(c.Stdout, "%s is a rule already: kept its counters\n", r)
			}
			return nil
		})
	})
}

// DelCmd deletes a rule.
type DelCmd struct {
	IPAddress string `name:"ip-address" required:"" placeholder:"X" help:"The rule to delete, as added."`
}

// Run deletes the rule, then its stats entry.
func (d *DelCmd) Run(c *Context) error {
	r, err := rule.Parse(d.IPAddress)
	if err != nil {
		return err
	}
	return c.changeMaps(func(set *maps.Set) error {
		if err := set.Delete(r); errors.Is(err, maps.ErrUnknownRule) {
			return fmt.Errorf("%w: see the rules with 'traffic_meter list'", err)
		} else if err != nil {
			return err
		}
		fmt.Fprintf(c.Stdout, "deleted %s\n", r)
		return nil
	})
}

// changeMaps runs change over the pinned maps, which must exist, in a
// change of the pin directory (Context.change).
func (c *Context) changeMaps(change func(*maps.Set) error) error {
	return c.change(false, func(*pindir.Dir) error {
		set, err := maps.Open(c.Dir)
		if err != nil {
			return err
		}
		defer set.Close()
		return change(set)
	})
}

// ImportCmd adds the rules of a JSON file.
type ImportCmd struct {
	File string `name:"file" required:"" placeholder:"F.json" help:"JSON array of IPv4/IPv6 addresses and CIDRs, such as [\"10.0.0.0/24\", \"2001:db8::1\"]."`
	RuleOptions
	Capacity
}

// Run reads the whole file first, so that a file that is not a valid JSON
// array adds nothing; then it adds the valid items in batches, all or
// nothing.
func (im *ImportCmd) Run(c *Context) (err error) {
	f, err := openFile(im.File, "a readable JSON file")
	if err != nil {
		return err
	}
	defer f.Close()
	spare := c.spareMaps(im.Capacity)
	defer func() {
		if s := spare(); s != nil {
			s.Close()
		}
	}()
	rules, skipped, err := readItems(c, f, rule.ReadJSON)
	if err != nil {
		return fmt.Errorf("%s: %w; nothing was imported", im.File, err)
	}
	return c.change(true, func(d *pindir.Dir) error {
		return c.withMaps(d, im.Capacity, spare(), func(set *maps.Set) error {
			added, err := set.AddRules(c.Ctx, rules, im.options())
			if errors.Is(err, context.Canceled) {
				return fmt.Errorf("%w: removed the rules it had added; nothing was imported", errInterrupted)
			}
			if err != nil {
				return fmt.Errorf("%w; nothing was imported", withFix(err))
			}
			fmt.Fprintf(c.Stdout, "imported %d rules (%d new), skipped %d\n", len(rules), added, skipped)
			return nil
		})
	})
}

// ListCmd lists the rules.
type ListCmd struct {
	JSON bool `name:"json" help:"Print JSON: {\"rules\": [\"10.0.0.0/24\", ...], \"options\": {\"10.0.0.0/24\": {\"by_interface\": true, \"hosts\": 1000}}}, the options of the rules that have any."`
}

// Run prints the rules, IPv4 then IPv6, in canonical CIDR form, each
// with its options, if any.
func (l *ListCmd) Run(c *Context) error {
	var rules []maps.Listed
	err := c.read(func(set *maps.Set) (err error) {
		rules, err = set.Rules()
		return err
	})
	if err != nil {
		return err
	}
	if !l.JSON {
		for _, r := range rules {
			fmt.Fprintln(c.Stdout, r)
		}
		return nil
	}
	var b []byte
	b = append(b, `{"rules":[`...)
	for i, r := range rules {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = r.Rule.AppendTo(b)
		b = append(b, '"')
	}
	b = append(b, `],"options":{`...)
	first := true
	for _, r := range rules {
		if r.Options == (maps.Options{}) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = r.Rule.AppendTo(b)
		b = append(b, `":`...)
		b = r.Options.AppendJSON(b)
	}
	b = append(b, "}}\n"...)
	_, err = c.Stdout.Write(b)
	return err
}
