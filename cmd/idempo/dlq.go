package main

import (
	"context"
	"fmt"
	"io"
)

// runDLQ is replaced by the dlq command implementation.
func runDLQ(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
		fmt.Fprintln(stdout, "Usage: idempo dlq list|show|replay|purge [flags]")
		return 0
	}
	fmt.Fprintln(stderr, "idempo dlq: not available in this build")
	return 2
}
