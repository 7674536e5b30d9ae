package cli

import (
	"fmt"
	"go/doc/comment"
	"strings"

	"github.com/alecthomas/kong"
	mangokong "github.com/alecthomas/mango-kong"
	"github.com/muesli/mango"
	"github.com/muesli/roff"

	"github.com/traffic-meter/traffic_meter/maps"
)

// ManCmd prints the man page.
type ManCmd struct{}

func (m *ManCmd) unprivileged() {}

// Run prints the man page, in roff: its commands, flags and detailed help
// come from the same command model as --help.
func (m *ManCmd) Run(c *Context, kctx *kong.Context) error {
	page := mangokong.NewManPage(1, kctx.Model).
		WithSection("Files", maps.DefaultPinDir+"\n    The default pin directory (--bpffs-pin): the maps, and the attachments under links/.").
		WithSection("Exit Status", "0 on success; 1 on an error, printed as one line on stderr: traffic_meter: error: <problem>: <what to do>.").
		WithSection("See Also", "ip-link(8), bpftool(8), prometheus(1)")
	doc := manDoc{Document: roff.NewDocument(), detail: map[string]string{kctx.Model.Detail: kctx.Model.Detail}}
	doc.takeDetails(&page.Root)
	_, err := fmt.Fprint(c.Stdout, page.Build(doc))
	return err
}

// manDoc is the roff document of the man page. mango-kong passes a
// command's detailed help (its Help method) to mango as the command's
// usage, which mango prints on one line with the command's name, and the
// description as lines of text; manDoc prints each as the paragraphs,
// lists and literal lines of its Go doc comment instead, after the
// command's one-line help.
type manDoc struct {
	*roff.Document
	// detail maps a text mango prints (the description, a command's
	// one-line help) to the doc comment to print for it.
	detail map[string]string
}

// takeDetails moves the detailed help of cmd's subcommands from their
// usage into d.detail, keyed by their one-line help.
func (d manDoc) takeDetails(cmd *mango.Command) {
	for _, sub := range cmd.Commands {
		if sub.Usage != "" {
			d.detail[sub.Short] = sub.Short + "\n\n" + sub.Usage
			sub.Usage = ""
		}
		d.takeDetails(sub)
	}
}

// Text prints text, or the doc comment d.detail holds for it.
func (d manDoc) Text(text string) {
	detail, ok := d.detail[text]
	if !ok {
		d.Document.Text(text)
		return
	}
	for i, block := range new(comment.Parser).Parse(detail).Content {
		if _, list := block.(*comment.List); i > 0 && !list {
			d.Paragraph() // a list's items start paragraphs of their own
		}
		switch b := block.(type) {
		case *comment.Paragraph:
			d.line(plainText(b.Text))
		case *comment.List:
			for _, item := range b.Items {
				var text []string
				for _, p := range item.Content {
					text = append(text, plainText(p.(*comment.Paragraph).Text))
				}
				d.List(strings.Join(text, " "))
			}
		case *comment.Code:
			for line := range strings.Lines(b.Text) {
				d.line("    " + strings.TrimSuffix(line, "\n"))
				d.EndSection() // a new line, which starts with spaces: a line break
			}
		}
	}
}

// line prints a line of text. roff.Document.Text takes its text as a
// format string, so a percent sign is doubled.
func (d manDoc) line(text string) {
	d.Document.Text(strings.ReplaceAll(text, "%", "%%"))
}

// plainText is the text of a doc comment's paragraph, on one line.
func plainText(text []comment.Text) string {
	var b strings.Builder
	for _, t := range text {
		switch t := t.(type) {
		case comment.Plain:
			b.WriteString(string(t))
		case comment.Italic:
			b.WriteString(string(t))
		case *comment.Link:
			b.WriteString(plainText(t.Text))
		case *comment.DocLink:
			b.WriteString(plainText(t.Text))
		}
	}
	return strings.ReplaceAll(b.String(), "\n", " ")
}
