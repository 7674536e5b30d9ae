// Package table writes the aligned text tables of traffic_meter's output:
// a header and rows, the first column aligned left and the others right,
// columns two spaces apart.
package table

import "io"

// Table is a table being filled.
type Table struct {
	rows [][]string // the header first
}

// New returns a table with the given column headings.
func New(header ...string) *Table { return &Table{rows: [][]string{header}} }

// Add adds a row, one cell per column.
func (t *Table) Add(cells ...string) { t.rows = append(t.rows, cells) }

// Write writes the table, in pieces of about 64 KiB.
func (t *Table) Write(w io.Writer) error {
	widths := make([]int, len(t.rows[0]))
	for _, row := range t.rows {
		for i, cell := range row {
			widths[i] = max(widths[i], len(cell))
		}
	}
	var b []byte
	for _, row := range t.rows {
		for i, cell := range row {
			pad := widths[i] - len(cell)
			if i > 0 {
				b = append(b, "  "...)
				b = appendSpaces(b, pad)
			}
			b = append(b, cell...)
			if i == 0 && len(row) > 1 {
				b = appendSpaces(b, pad)
			}
		}
		b = append(b, '\n')
		if len(b) > 1<<16 {
			if _, err := w.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	_, err := w.Write(b)
	return err
}

func appendSpaces(b []byte, n int) []byte {
	for range n {
		b = append(b, ' ')
	}
	return b
}
