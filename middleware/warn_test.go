package middleware_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
)

// recordingHandler keeps every record logged through it.
type recordingHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) warnings() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var msgs []string
	for _, r := range h.records {
		if r.Level == slog.LevelWarn {
			msgs = append(msgs, r.Message)
		}
	}
	return msgs
}

// A GoChannel as the DLQ publisher keeps nothing and drops dead letters that
// no subscriber waits for: New says so once. Another publisher gets no such
// warning.
func TestNewWarnsOfGoChannelDLQ(t *testing.T) {
	t.Parallel()
	pubsub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	t.Cleanup(func() { _ = pubsub.Close() })

	logs := &recordingHandler{}
	stack, err := middleware.New(middleware.Config{Store: memstore.New(nil), DLQ: dlq.Config{Publisher: pubsub}, Logger: slog.New(logs)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = stack.Close() })
	warnings := logs.warnings()
	require.Len(t, warnings, 1, "warnings: %q", warnings)
	require.Contains(t, warnings[0], "GoChannel")
	require.Contains(t, warnings[0], "lost")

	other := &recordingHandler{}
	stack2, err := middleware.New(middleware.Config{Store: memstore.New(nil), DLQ: dlq.Config{Publisher: newCapture()}, Logger: slog.New(other)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = stack2.Close() })
	require.Empty(t, other.warnings())
}
