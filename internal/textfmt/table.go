package textfmt

import "io"

// Table is an aligned text table being filled: a header and rows, the
// first column aligned left and the others right (counters), or all left
// (names), columns two spaces apart.
type Table struct {
	rows [][]string // the header first
	left int        // how many columns, from the first, are aligned left
}

// NewTable returns a table with the given column headings.
// The first column is aligned left, the others right.
func NewTable(header ...string) *Table { return &Table{rows: [][]string{header}, left: 1} }

// NewLeftTable returns a table whose columns are all aligned left.
func NewLeftTable(header ...string) *Table {
	return &Table{rows: [][]string{header}, left: len(header)}
}

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
			}
			if i >= t.left {
				b = appendSpaces(b, pad)
			}
			b = append(b, cell...)
			if i < t.left && i < len(row)-1 {
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
