package main

import (
	"bytes"
	"flag"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var (
	flagLine  = regexp.MustCompile(`^  --([a-z0-9-]+)(?: ([A-Za-z]+))?$`)
	usageLine = regexp.MustCompile(`^        \S`)
)

// TestEveryHelpHasOneLayout: every command's --help prints the usage line,
// a description, and its flags (or subcommands) in one layout, each flag
// with its default.
func TestEveryHelpHasOneLayout(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		name  string
		group bool
	}{
		{[]string{"--help"}, "idempo", true},
		{[]string{"help"}, "idempo", true},
		{[]string{"demo", "--help"}, "idempo demo", false},
		{[]string{"verify", "--help"}, "idempo verify", false},
		{[]string{"bench", "-h"}, "idempo bench", false},
		{[]string{"dlq", "--help"}, "idempo dlq", true},
		{[]string{"dlq", "list", "--help"}, "idempo dlq list", false},
		{[]string{"dlq", "show", "--help"}, "idempo dlq show", false},
		{[]string{"dlq", "replay", "--help"}, "idempo dlq replay", false},
		{[]string{"dlq", "purge", "--help"}, "idempo dlq purge", false},
		{[]string{"verify-consumer", "--help"}, "idempo verify-consumer", false},
		{[]string{"relay", "--help"}, "idempo relay", false},
		{[]string{"outbox", "--help"}, "idempo outbox", true},
		{[]string{"outbox", "status", "--help"}, "idempo outbox status", false},
		{[]string{"outbox", "dead", "--help"}, "idempo outbox dead", false},
		{[]string{"outbox", "requeue", "-h"}, "idempo outbox requeue", false},
	} {
		code, out, errOut := runCLI(t, tc.args...)
		require.Equal(t, 0, code, "%v", tc.args)
		help := out + errOut
		lines := strings.Split(strings.TrimRight(help, "\n"), "\n")
		require.Regexp(t, `^Usage: `+regexp.QuoteMeta(tc.name)+` `, lines[0], "%v: the usage line", tc.args)
		require.Empty(t, lines[1], "%v: a blank line after the usage line", tc.args)
		require.NotEmpty(t, lines[2], "%v: a description", tc.args)
		section := "Flags:"
		if tc.group {
			section = "Commands:"
		}
		i := 2
		for i < len(lines) && lines[i] != section {
			i++
		}
		require.Less(t, i, len(lines), "%v: a %s section\n%s", tc.args, section, help)
		require.Empty(t, lines[i-1], "%v: a blank line before %s", tc.args, section)
		rest := lines[i+1:]
		require.NotEmpty(t, rest, "%v", tc.args)
		if tc.group {
			for _, l := range rest {
				if l == "" {
					break
				}
				require.Regexp(t, `^  `, l, "%v: a command line", tc.args)
			}
			continue
		}
		require.Len(t, rest, 2*(len(rest)/2), "%v: two lines per flag\n%s", tc.args, help)
		for j := 0; j < len(rest); j += 2 {
			m := flagLine.FindStringSubmatch(rest[j])
			require.NotNil(t, m, "%v: %q is not a flag line", tc.args, rest[j])
			require.Regexp(t, usageLine, rest[j+1], "%v: the usage of --%s", tc.args, m[1])
			switch m[2] {
			case "int", "uint", "float", "duration":
				require.Regexp(t, `\(default [^)]+\)$`, rest[j+1], "%v: --%s shows its default", tc.args, m[1])
			}
		}
	}
}

// printFlagHelp shows every default except "" and false, strings quoted,
// and hides flags without a usage text.
func TestFlagHelpShowsDefaults(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("n", 3, "how many")
	fs.Int("zero", 0, "zero is a default too")
	fs.String("s", "kafka", "a `URL`")
	fs.String("empty", "", "nothing by default")
	fs.Bool("b", false, "a switch")
	fs.Duration("d", 2*time.Second, "a lease")
	fs.String("hidden", "x", "")
	var buf bytes.Buffer
	printFlagHelp(&buf, fs, "idempo x [flags]", "Does x.")
	require.Equal(t, `Usage: idempo x [flags]

Does x.

Flags:
  --b
        a switch
  --d duration
        a lease (default 2s)
  --empty string
        nothing by default
  --n int
        how many (default 3)
  --s URL
        a URL (default "kafka")
  --zero int
        zero is a default too (default 0)
`, buf.String())
}

// A bad flag is one line, in the CLI's spelling, like every other error:
// not the flag package's message followed by the whole help.
func TestBadFlagIsOneLine(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		"idempo demo: flag provided but not defined: --bogus":     {"demo", "--bogus"},
		`idempo demo: invalid value "abc" for flag --events`:      {"demo", "--events", "abc"},
		"idempo dlq purge: flag provided but not defined: --nope": {"dlq", "purge", "--nope"},
	}
	for want, args := range cases {
		code, _, errOut := runCLI(t, args...)
		require.Equal(t, 2, code, "%v", args)
		require.Equal(t, 1, strings.Count(strings.TrimSpace(errOut), "\n")+1, "%v: one line, got:\n%s", args, errOut)
		require.Contains(t, errOut, want)
		require.NotContains(t, errOut, "Usage:")
	}
	code, _, errOut := runCLI(t, "dlq", "purge", "--json", "--broker", "kafka", "--store", "memory", "--topic", "t", "--all-unresolved")
	require.Equal(t, 2, code)
	require.NotContains(t, errOut, "flag provided but not defined", "purge takes --json like list and replay")
}

// Kafka-only flags given for another broker are refused, naming what they
// need, instead of being accepted and changing nothing; the broker URL,
// which may hold a password, is not echoed.
func TestKafkaOnlyFlagsRefusedElsewhere(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		"--ordering key needs --broker kafka":       {"demo", "--ordering", "key"},
		"--ordering unordered needs --broker kafka": {"bench", "--broker", "amqp://guest:s3cret@127.0.0.1:5672/", "--ordering", "unordered"},
		"--partitions needs --broker kafka":         {"bench", "--partitions", "4"},
		"--partitions sets the embedded cluster's":  {"bench", "--broker", "kafka://127.0.0.1:1", "--partitions", "4"},
		"--ordering key needs":                      {"verify", "--broker", "amqp://guest:s3cret@127.0.0.1:5672/", "--ordering", "key"},
	}
	for want, args := range cases {
		code, _, errOut := runCLI(t, args...)
		require.Equal(t, 2, code, "%v: %s", args, errOut)
		require.Contains(t, errOut, want, "%v", args)
		require.NotContains(t, errOut, "s3cret")
	}
}
