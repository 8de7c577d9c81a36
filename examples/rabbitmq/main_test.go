package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The example runs to its end: every event is charged once and the
// duplicate is skipped by the stack.
func TestExample(t *testing.T) {
	var out syncBuffer // handlers of two partitions print at once
	require.NoError(t, run(&out), "output so far:\n%s", out.String())
	require.Contains(t, out.String(), "skipped duplicate of event order-0")
	require.Contains(t, out.String(), "5 messages: 4 processed, 1 duplicate skipped")
	require.Equal(t, 1, strings.Count(out.String(), "charged for event order-0 "), "order-0 is charged once:\n%s", out.String())
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
