package cli

import (
	"regexp"
	"strings"
	"testing"
)

// TestManDetail checks that the man page carries the detailed help of
// traffic_meter and of each command, every paragraph and list item of it,
// after the command's one-line help and not on its tag line.
func TestManDetail(t *testing.T) {
	var stdout, stderr strings.Builder
	if status := Main([]string{"man"}, &stdout, &stderr); status != 0 {
		t.Fatalf("man: exit %d: %s", status, stderr.String())
	}
	page := strings.NewReplacer(`\&.`, ".", `\e`, `\`).Replace(stdout.String())
	if strings.Contains(page, "%!") {
		t.Errorf("the page has a mangled format verb:\n%s", page)
	}
	for _, tt := range []struct {
		name   string
		detail string
	}{
		{"traffic_meter", CLI{}.Help()},
		{"load", LoadCmd{}.Help()},
		{"unload", UnloadCmd{}.Help()},
		{"status", StatusCmd{}.Help()},
		{"add", AddCmd{}.Help()},
		{"del", DelCmd{}.Help()},
		{"import", ImportCmd{}.Help()},
		{"list", ListCmd{}.Help()},
		{"stats", StatsCmd{}.Help()},
		{"exporter", ExporterCmd{}.Help()},
		{"save", SaveCmd{}.Help()},
		{"restore", RestoreCmd{}.Help()},
		{"version", VersionCmd{}.Help()},
		{"completion", CompletionCmd{}.Help()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name != "traffic_meter" {
				if tag := regexp.MustCompile(`(?m)^\\fB` + tt.name + `\b.*\\fP(.*)$`).FindStringSubmatch(page); tag == nil || tag[1] != "" {
					t.Errorf("the tag line of %s is %q, want the command alone", tt.name, tag)
				}
			}
			for _, para := range strings.Split(tt.detail, "\n") {
				para = strings.TrimPrefix(strings.TrimSpace(para), "- ")
				if para != "" && !strings.Contains(page, "\n"+para+"\n") {
					t.Errorf("the page lacks this line of %s's detail:\n%s", tt.name, para)
				}
			}
		})
	}
}
