// Command idempo demonstrates, verifies and operates idempo's idempotent
// consumer stack.
//
//	idempo demo     run the whole stack with injected faults (no servers needed)
//	idempo help     show this help
//
// Every command answers --help.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
)

// printMainHelp prints the help of idempo itself.
func printMainHelp(w io.Writer) {
	printGroupHelp(w, "idempo <command> [flags]", "idempo — effectively-once event consumers on Watermill.", [][2]string{
		{"demo", "publish events with injected faults through the full stack and\ncheck that every effect happened once and nothing was lost"},
		{"verify", "the same fault mix against real brokers and stores, with consumer\nprocesses killed and restarted, judged per guarantee level"},
		{"dlq", "list, show, replay and purge dead letters"},
		{"bench", "measure what the stack costs on a broker and store (--outbox: what\na relay costs)"},
		{"relay", "publish the committed rows of a transactional outbox to a broker"},
		{"outbox", "an outbox's pending and dead rows; requeue dead rows"},
		{"console", "the dead-letter console: a web page to see, group, replay and purge dead letters"},
		{"help", "show this help"},
	}, "Run 'idempo <command> --help' for a command's flags.")
}

func main() {
	if backend.ServeEmbeddedChild() { // bench's broker process
		os.Exit(0)
	}
	// go-redis prints dial failures itself, through a logger global to the
	// process; the CLI reports them once, as errors. This process is the
	// CLI's own, so it is set here, once, and nowhere else.
	redis.SetLogger(quietRedis{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first Ctrl-C stops the command cleanly; a second one kills it.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// run executes the CLI and returns the exit status: 0 success, 1 a verdict
// that does not hold, 2 a usage or setup error, 130 interrupted (Ctrl-C or
// SIGTERM; no verdict).
//
// Everything it prints goes through one redactor: the credentials of every
// URL or DSN on the command line are replaced by "xxxxx", in the CLI's own
// lines and in the error texts of drivers alike.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	red := backend.NewRedactor(args...)
	stdout, stderr = red.Writer(stdout), red.Writer(stderr)
	if len(args) == 0 {
		printMainHelp(stderr)
		return 2
	}
	var cmd command
	switch args[0] {
	case "help", "-h", "--help", "-help":
		printMainHelp(stdout)
		return 0
	case "demo":
		cmd = &demoCommand{}
	case "verify":
		cmd = &verifyCommand{}
	case "verify-consumer":
		cmd = &verifyConsumer{}
	case "verify-outbox-child":
		cmd = &verifyOutboxChild{}
	case "bench":
		cmd = &benchCommand{}
	case "relay":
		cmd = &relayCommand{}
	case "console":
		cmd = &consoleCommand{}
	case "dlq":
		return runDLQ(ctx, args[1:], stdout, stderr)
	case "outbox":
		return runOutbox(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "idempo: unknown command %q\n\n", args[0])
		printMainHelp(stderr)
		return 2
	}
	return runCommand(ctx, cmd, args[1:], stdout, stderr)
}

func isTerminal(w io.Writer) bool {
	for {
		u, ok := w.(interface{ Unwrap() io.Writer })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
