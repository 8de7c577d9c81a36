package main

import (
	"context"
	"fmt"
	"io"
)

// runBench is replaced by the bench command implementation.
func runBench(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
		fmt.Fprintln(stdout, "Usage: idempo bench [flags]")
		return 0
	}
	fmt.Fprintln(stderr, "idempo bench: not available in this build")
	return 2
}
