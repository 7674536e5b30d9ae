// Package savefile reads and writes traffic_meter's saved-counters file:
// every rule with its in and out packets and bytes, so that counters
// survive an unload, a reboot or an upgrade.
//
// The file is JSON, one rule per line:
//
//	{"version":2,"saved_at":"2026-11-22T15:04:18Z","rules":[
//	{"rule":"10.0.0.0/24","in":{"packets":2,"bytes":196},"out":{"packets":1,"bytes":98}},
//	{"rule":"10.1.0.0/16","options":{"by_interface":true,"hosts":1000},"in":...,"out":...,
//	 "hosts":[{"host":"10.1.0.1","in":...,"out":...}, ...]},
//	...
//	]}
//
// Counts are exact unsigned 64-bit integers, read and written without
// going through floating point.
package savefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/traffic-meter/traffic_meter/internal/rule"
	"github.com/traffic-meter/traffic_meter/maps"
)

// Version is the version of the file format this package writes; it
// reads every version from 1 to Version. Version 2 added the options of a
// rule ("options", maps.Options), written for the rules that have any.
const Version = 2

// File is a saved-counters file.
type File struct {
	// SavedAt is when the counters were read; zero if the file does not say.
	SavedAt time.Time
	// Rules are the rules and their counters, in the file's order.
	Rules []maps.RuleStats
	// Interfaces are the per-interface rows of the rules that have them
	// (interfaces.go).
	Interfaces Rows
}

// Write writes the rules and their counters, with the rows of those that
// have per-interface rows, to w, with savedAt as the time they were read.
func Write(w io.Writer, savedAt time.Time, rules []maps.RuleStats, rows Rows) error {
	head := fmt.Appendf(nil, `{"version":%d,"saved_at":"%s","rules":[`, Version, savedAt.UTC().Format(time.RFC3339))
	return WriteRules(w, head, rules, rows, false)
}

// WriteRules writes head, then the rules as the items of a JSON array, one
// a line:
//
//	{"rule":"10.0.0.0/24","in":{"packets":2,"bytes":196},"out":{"packets":1,"bytes":98}}
//
// with, when totals is set, the rule's total packets and bytes (in + out)
// after "rule", then "]}" and a newline. head opens an object and its
// array, as Write's does. It writes as it goes, in pieces of about 64 KB.
func WriteRules(w io.Writer, head []byte, rules []maps.RuleStats, rows Rows, totals bool) error {
	b := head
	for i, r := range rules {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, "\n"+`{"rule":"`...)
		b = r.Rule.AppendTo(b)
		b = append(b, '"')
		if r.Options != (maps.Options{}) {
			b = append(b, `,"options":`...)
			b = r.Options.AppendJSON(b)
		}
		if ir, ok := rows[r.Rule]; ok {
			b = appendInterfaces(b, ir)
		}
		if totals {
			t := r.Stats.Total()
			b = append(b, `,"packets":`...)
			b = strconv.AppendUint(b, t.Packets, 10)
			b = append(b, `,"bytes":`...)
			b = strconv.AppendUint(b, t.Bytes, 10)
		}
		b = append(b, `,"in":`...)
		b = appendCounter(b, r.Stats.In)
		b = append(b, `,"out":`...)
		b = appendCounter(b, r.Stats.Out)
		b = appendHosts(b, r.Hosts)
		b = append(b, '}')
		if len(b) > 1<<16 {
			if _, err := w.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	b = append(b, "\n]}\n"...)
	_, err := w.Write(b)
	return err
}

func appendCounter(b []byte, c maps.Counter) []byte {
	b = append(b, `{"packets":`...)
	b = strconv.AppendUint(b, c.Packets, 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendUint(b, c.Bytes, 10)
	return append(b, '}')
}

// formatFix says what a valid file looks like.
const formatFix = `restore a file written by 'traffic_meter save': {"version":2,"saved_at":"...","rules":[{"rule":"10.0.0.0/24","in":{"packets":N,"bytes":N},"out":{"packets":N,"bytes":N}}]}`

// Read reads a saved-counters file from r, streaming. An item of "rules"
// that is not a valid rule with valid counters, or that repeats an earlier
// item's rule, is skipped and reported to warn with its index in the array
// (from 0). A file that is not valid JSON to its very end, has no
// "version" or one other than Version, or no "rules" array, is an error,
// and then the rules read so far must not be used.
func Read(r io.Reader, warn func(index int, reason error)) (File, error) {
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err == io.EOF {
		return File{}, errors.New("the file is empty: " + formatFix)
	}
	if err != nil {
		return File{}, jsonError(dec, err)
	}
	if tok != json.Delim('{') {
		return File{}, fmt.Errorf("the JSON root is %s, not an object: %s", rule.TokenKind(tok), formatFix)
	}
	var f File
	var version, rules bool
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return File{}, jsonError(dec, err)
		}
		switch name := tok.(string); name {
		case "version":
			if err := readVersion(dec); err != nil {
				return File{}, err
			}
			version = true
		case "saved_at":
			if f.SavedAt, err = readTime(dec); err != nil {
				return File{}, err
			}
		case "rules":
			if rules {
				return File{}, errors.New(`the file has "rules" twice: ` + formatFix)
			}
			if f.Rules, f.Interfaces, err = readRules(dec, warn); err != nil {
				return File{}, err
			}
			rules = true
		default: // a field of a later minor addition: ignored
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return File{}, jsonError(dec, err)
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return File{}, jsonError(dec, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = errors.New("data after the object")
		}
		return File{}, jsonError(dec, err)
	}
	switch {
	case !version:
		return File{}, errors.New(`the file has no "version", so it is not a saved-counters file: ` + formatFix)
	case !rules:
		return File{}, errors.New(`the file has no "rules": ` + formatFix)
	}
	return f, nil
}

// VersionError is a saved file of a version this traffic_meter does not
// read; Got is the version the file gives.
type VersionError struct{ Got string }

func (e *VersionError) Error() string {
	return fmt.Sprintf("the file is of version %s, and this traffic_meter reads versions 1 to %d", e.Got, Version)
}

// readVersion reads the value of "version" and checks it is Version.
func readVersion(dec *json.Decoder) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return jsonError(dec, err)
	}
	if v, err := strconv.ParseUint(string(raw), 10, 64); err != nil || v < 1 || v > Version {
		return &VersionError{Got: describe(raw)}
	}
	return nil
}

// readTime reads the value of "saved_at", an RFC 3339 time.
func readTime(dec *json.Decoder) (time.Time, error) {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return time.Time{}, jsonError(dec, err)
	}
	var s string
	if raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf(`"saved_at" is %s, not an RFC 3339 time such as "2026-01-02T15:04:05Z": fix the file`, describe(raw))
}

// readRules reads the "rules" array, warning of and skipping bad items and
// repeated rules.
func readRules(dec *json.Decoder, warn func(int, error)) ([]maps.RuleStats, Rows, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, jsonError(dec, err)
	}
	if tok != json.Delim('[') {
		return nil, nil, fmt.Errorf(`"rules" is %s, not an array: %s`, rule.TokenKind(tok), formatFix)
	}
	var rules []maps.RuleStats
	rows := Rows{}
	first := make(map[netip.Prefix]int)
	var raw json.RawMessage
	for i := 0; dec.More(); i++ {
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, jsonError(dec, err)
		}
		rs, ir, err := readItem(raw)
		if err != nil {
			warn(i, err)
			continue
		}
		if j, dup := first[rs.Rule]; dup {
			warn(i, fmt.Errorf("%s again (first at item %d): kept the first", rs.Rule, j))
			continue
		}
		first[rs.Rule] = i
		rules = append(rules, rs)
		if ir != nil {
			rows[rs.Rule] = ir
		}
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, nil, jsonError(dec, err)
	}
	return rules, rows, nil
}

// itemError is why an item of "rules" is skipped.
type itemError struct{ reason string }

func (e *itemError) Error() string { return e.reason }

func badItem(format string, args ...any) error {
	return &itemError{fmt.Sprintf(format, args...)}
}

// readItem reads an item of "rules", valid JSON, checking each field by
// hand so that every problem gets a clear reason and counts never pass
// through float64.
func readItem(b []byte) (maps.RuleStats, []Interface, error) {
	if b[0] != '{' {
		return maps.RuleStats{}, nil, badItem(`%s, not an object: write each rule as {"rule":"10.0.0.0/24","in":{"packets":N,"bytes":N},"out":{"packets":N,"bytes":N}}`, describe(b))
	}
	var ruleRaw, options, in, out, interfaces, hosts []byte
	members(b, func(name, value []byte) {
		switch string(name) {
		case "hosts":
			hosts = value
		case "rule":
			ruleRaw = value
		case "options":
			options = value
		case "in":
			in = value
		case "out":
			out = value
		case "interfaces":
			interfaces = value
		}
	})
	if ruleRaw == nil {
		return maps.RuleStats{}, nil, badItem(`no "rule"`)
	}
	var s string
	if ruleRaw[0] != '"' || json.Unmarshal(ruleRaw, &s) != nil {
		return maps.RuleStats{}, nil, badItem(`"rule" is %s, not a string such as "10.0.0.0/24"`, describe(ruleRaw))
	}
	r, err := rule.Parse(s)
	if err != nil {
		return maps.RuleStats{}, nil, badItem("%v", err)
	}
	rs := maps.RuleStats{Rule: r}
	if rs.Options, err = readOptions(r, options); err != nil {
		return maps.RuleStats{}, nil, err
	}
	if rs.Stats.In, err = readCounter(r, "in", in); err != nil {
		return maps.RuleStats{}, nil, err
	}
	if rs.Stats.Out, err = readCounter(r, "out", out); err != nil {
		return maps.RuleStats{}, nil, err
	}
	if rs.Hosts, err = readHosts(rs, hosts); err != nil {
		return maps.RuleStats{}, nil, err
	}
	ir, err := readInterfaces(r, rs.Stats, interfaces)
	if err != nil {
		return maps.RuleStats{}, nil, err
	}
	return rs, ir, nil
}

// readOptions reads the "options" of rule r, if it has any:
// {"by_interface":true|false,"hosts":N}, each member optional.
func readOptions(r netip.Prefix, raw []byte) (maps.Options, error) {
	var o maps.Options
	if raw == nil {
		return o, nil
	}
	if raw[0] != '{' {
		return o, badItem(`%s: "options" is %s, not an object such as {"by_interface":true,"hosts":1000}`, r, describe(raw))
	}
	var byInterface, hosts []byte
	members(raw, func(n, value []byte) {
		switch string(n) {
		case "by_interface":
			byInterface = value
		case "hosts":
			hosts = value
		}
	})
	switch string(byInterface) {
	case "", "false":
	case "true":
		o.ByInterface = true
	default:
		return o, badItem(`%s: "options.by_interface" is %s, not true or false`, r, describe(byInterface))
	}
	if hosts != nil {
		n, err := readCount(r, "options.hosts", hosts)
		if err != nil {
			return o, err
		}
		if n > maps.MaxHosts {
			return o, badItem("%s: options.hosts is %d, more than the %d hosts a rule holds", r, n, maps.MaxHosts)
		}
		o.Hosts = uint32(n)
	}
	return o, nil
}

// readCounter reads the "in" or "out" counter of rule r.
func readCounter(r netip.Prefix, name string, raw []byte) (maps.Counter, error) {
	if raw == nil {
		return maps.Counter{}, badItem(`%s: no %q counter`, r, name)
	}
	if raw[0] != '{' {
		return maps.Counter{}, badItem(`%s: %q is %s, not an object such as {"packets":N,"bytes":N}`, r, name, describe(raw))
	}
	var packets, bytes []byte
	members(raw, func(n, value []byte) {
		switch string(n) {
		case "packets":
			packets = value
		case "bytes":
			bytes = value
		}
	})
	var c maps.Counter
	var err error
	if c.Packets, err = readCount(r, name+".packets", packets); err != nil {
		return c, err
	}
	c.Bytes, err = readCount(r, name+".bytes", bytes)
	return c, err
}

// readCount reads a count: a JSON number that is a whole number from 0 to
// the largest uint64, without fraction or exponent.
func readCount(r netip.Prefix, name string, raw []byte) (uint64, error) {
	if raw == nil {
		return 0, badItem("%s: no %s", r, name)
	}
	problem := ""
	switch c := raw[0]; {
	case c == '-':
		problem = "negative"
	case c < '0' || c > '9':
		problem = "not a number"
	default:
		for _, d := range raw {
			if d < '0' || d > '9' {
				problem = "not a whole number"
				break
			}
		}
	}
	n, err := strconv.ParseUint(string(raw), 10, 64)
	if problem == "" && err != nil {
		problem = "too large"
	}
	if problem != "" {
		return 0, badItem("%s: %s is %s, %s: counts are whole numbers from 0 to %d, written without fraction or exponent", r, name, describe(raw), problem, uint64(1<<64-1))
	}
	return n, nil
}

// describe quotes a JSON value for a one-line message, compacted and cut
// to a few dozen bytes.
func describe(raw []byte) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		b.Reset()
		b.Write(raw)
	}
	if b.Len() > 40 {
		return strings.ToValidUTF8(string(b.Bytes()[:37]), "") + "..."
	}
	return b.String()
}

// jsonError is rule.JSONError for a saved-counters file.
func jsonError(dec *json.Decoder, err error) error {
	return rule.JSONError(dec, err, "invalid JSON: the file ends too early (was it truncated?): save the counters again, or fix the file")
}
