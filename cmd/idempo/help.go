package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// Every command's help has one layout, printed by newFlagSet's usage (a
// command with flags) or printGroupHelp (a command with subcommands):
//
//	Usage: idempo demo [flags]
//
//	What the command does, in paragraphs.
//
//	Flags:
//	  --events int
//	        number of unique events to publish (default 20000)
//
// A flag's default is shown unless it is empty or false. Flags without a
// usage text are hidden (they exist for tests).

// newFlagSet returns the flag set of command name ("demo", "dlq list")
// with the common help: synopsis is the usage line after "Usage: ",
// description the text below it.
func newFlagSet(name, synopsis, description string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("idempo "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printFlagHelp(fs.Output(), fs, synopsis, description) }
	return fs
}

func printFlagHelp(w io.Writer, fs *flag.FlagSet, synopsis, description string) {
	var b strings.Builder
	writeHead(&b, synopsis, description)
	b.WriteString("\nFlags:\n")
	fs.VisitAll(func(f *flag.Flag) {
		if f.Usage == "" {
			return
		}
		typ, usage := flag.UnquoteUsage(f)
		b.WriteString("  --" + f.Name)
		if typ != "" {
			b.WriteString(" " + typ)
		}
		b.WriteString("\n        " + strings.ReplaceAll(usage, "\n", "\n        "))
		if f.DefValue != "" && f.DefValue != "false" {
			if g, ok := f.Value.(flag.Getter); ok && isString(g.Get()) {
				fmt.Fprintf(&b, " (default %q)", f.DefValue)
			} else {
				fmt.Fprintf(&b, " (default %s)", f.DefValue)
			}
		}
		b.WriteString("\n")
	})
	_, _ = io.WriteString(w, b.String())
}

// printGroupHelp prints the help of a command made of subcommands.
func printGroupHelp(w io.Writer, synopsis, description string, commands [][2]string, footer string) {
	var b strings.Builder
	writeHead(&b, synopsis, description)
	b.WriteString("\nCommands:\n")
	width := 0
	for _, c := range commands {
		width = max(width, len(c[0]))
	}
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, c[0], strings.ReplaceAll(c[1], "\n", "\n  "+strings.Repeat(" ", width+2)))
	}
	if footer != "" {
		b.WriteString("\n" + footer + "\n")
	}
	_, _ = io.WriteString(w, b.String())
}

func writeHead(b *strings.Builder, synopsis, description string) {
	b.WriteString("Usage: " + synopsis + "\n\n")
	b.WriteString(strings.TrimSpace(description) + "\n")
}

func isString(v any) bool { _, ok := v.(string); return ok }
