package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/outbox"
)

// A command is an options struct: its flags set its fields, Validate checks
// them before anything is opened, and Run does the work. runCommand does
// the rest for every command alike.
type command interface {
	// usage returns the command's name ("dlq list"), its usage line
	// (after "Usage: ") and its description, for the help layout.
	usage() (name, synopsis, description string)
	// flags registers the command's flags on fs, bound to its fields.
	flags(fs *flag.FlagSet)
	// Validate checks the options once the flags are parsed.
	Validate() error
	// Run does the work with what the runner opened. It returns what to
	// print on stdout (see [result]), or nil when it printed everything
	// itself, and an error that sets the exit status (see [exitStatus]).
	Run(ctx context.Context, e *env) (result, error)
}

// A result is what a command prints on stdout when it ends: its text, or
// with --json the result itself as one JSON object.
type result interface {
	text(w io.Writer)
}

// argsTaker is a command that takes positional arguments, given in any
// order with its flags. Other commands take none.
type argsTaker interface {
	args(pos []string) error
}

// jsonOutput is a command with a --json flag.
type jsonOutput interface {
	asJSON() bool
}

// jsonFlag is embedded by commands with --json; usage is the flag's text.
type jsonFlag struct{ json bool }

func (j *jsonFlag) registerJSON(fs *flag.FlagSet, usage string) {
	fs.BoolVar(&j.json, "json", false, usage)
}
func (j *jsonFlag) asJSON() bool { return j.json }

// env is what a command runs with.
type env struct {
	stdout, stderr io.Writer
	// args are the command's arguments as given.
	args []string
	// ops works on the dead letters of the command's --broker and --store,
	// opened by the runner for commands with a [dlqTarget].
	ops *dlqops.Ops
	// outbox and db are the outbox of the command's --db and --table,
	// opened by the runner for commands with an [outboxTarget].
	outbox *outbox.Outbox
	db     *backend.DB
	close  func()
}

// runCommand parses the flags and arguments of cmd, validates them, opens
// what it needs (once, through package backend), runs it, renders its
// result as text or JSON and returns the exit status. Every error is
// printed as "idempo <command>: <error>".
func runCommand(ctx context.Context, cmd command, args []string, stdout, stderr io.Writer) int {
	name, synopsis, description := cmd.usage()
	fail := func(err error) int {
		code := exitStatus(err)
		if ctx.Err() != nil && code != exitInterrupted {
			code, err = exitInterrupted, fmt.Errorf("interrupted: %w", err)
		}
		fmt.Fprintf(stderr, "idempo %s: %v\n", name, err)
		return code
	}
	fs := newFlagSet(name, synopsis, description, stderr)
	cmd.flags(fs)
	// The flag package writes the help for --help, and an error line plus the
	// help for a bad flag: keep the help for --help only, and make a bad flag
	// one line like every other error.
	var help bytes.Buffer
	fs.SetOutput(&help)
	pos, err := parseArgs(fs, cmd, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		_, _ = help.WriteTo(stderr)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "idempo %s: %v (see idempo %s --help)\n", name, flagError(err), name)
		return exitUsage
	}
	if a, ok := cmd.(argsTaker); ok {
		err = a.args(pos)
	} else if len(pos) > 0 {
		err = fmt.Errorf("unexpected arguments %q", pos)
	}
	if err != nil {
		return fail(err)
	}
	if err := cmd.Validate(); err != nil {
		return fail(err)
	}
	e := &env{stdout: stdout, stderr: stderr, args: args, close: func() {}}
	runCtx := ctx
	if t, ok := cmd.(dlqTarget); ok {
		var cancel context.CancelFunc
		runCtx, cancel = withTimeout(ctx, t.target().timeout)
		defer cancel()
		if err := openDLQ(runCtx, t.target(), e); err != nil {
			return fail(err)
		}
		defer e.close()
	}
	if t, ok := cmd.(outboxTarget); ok {
		var cancel context.CancelFunc
		runCtx, cancel = withTimeout(ctx, t.outboxTarget().timeout)
		defer cancel()
		if err := openOutbox(runCtx, t.outboxTarget(), e); err != nil {
			return fail(err)
		}
		defer e.close()
	}
	res, err := cmd.Run(runCtx, e)
	if res != nil {
		if j, ok := cmd.(jsonOutput); ok && j.asJSON() {
			if jerr := json.NewEncoder(stdout).Encode(res); jerr != nil && err == nil {
				err = jerr
			}
		} else {
			res.text(stdout)
		}
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

// parseArgs parses the flags and returns the positional arguments. Those
// of an [argsTaker] may come in any order with the flags; for other
// commands the flag package stops at the first one, and the rest of the
// command line is what is reported as unexpected.
func parseArgs(fs *flag.FlagSet, cmd command, args []string) (pos []string, err error) {
	if _, ok := cmd.(argsTaker); !ok {
		err := fs.Parse(args)
		return fs.Args(), err
	}
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// The exit statuses of every command.
const (
	exitFailed      = 1 // a verdict that does not hold; nothing found or nothing done
	exitUsage       = 2 // usage, setup, broker or store errors
	exitUnsettled   = 3 // replay or purge could not settle some entries
	exitInterrupted = 130
)

// errNothingToDo makes a command exit with status 1, as dlqops.ErrNotFound does.
var errNothingToDo = errors.New("nothing to do")

// statusError gives an error its exit status.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

// failed reports a verdict or check that does not hold: exit status 1.
func failed(err error) error { return &statusError{exitFailed, err} }

// interrupted reports a command stopped by Ctrl-C or SIGTERM (exit status
// 130: 128 + SIGINT, as a shell reports a process the signal killed). what
// says how far it got; it must not judge the unfinished run.
func interrupted(what string) error {
	return &statusError{exitInterrupted, errors.New("interrupted: " + what)}
}

// exitStatus returns the exit status for a command's error.
func exitStatus(err error) int {
	var se *statusError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &se):
		return se.code
	case errors.Is(err, dlqops.ErrEntriesFailed):
		return exitUnsettled
	case errors.Is(err, errNothingToDo), errors.Is(err, dlqops.ErrNotFound):
		return exitFailed
	default:
		return exitUsage
	}
}

// flagError rewrites the flag package's messages in the CLI's spelling of
// flags (two dashes).
func flagError(err error) string {
	msg := err.Error()
	for _, p := range []string{"flag provided but not defined: -", "flag needs an argument: -", " for flag -"} {
		msg = strings.Replace(msg, p, strings.TrimSuffix(p, "-")+"--", 1)
	}
	return msg
}
