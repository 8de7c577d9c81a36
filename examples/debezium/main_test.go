package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// sarama's metrics library starts one process-wide ticker goroutine the
	// first time a meter is created; it never stops, by design.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
}

// Records in the outbox event router's format, produced by kcat, one of
// them twice: each event's effect is applied exactly once, keyed by the
// "id" header, and the record without one is dead-lettered.
func TestDebeziumOutboxRecords(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var out syncBuffer
	effects, err := run(ctx, &out)
	if errors.Is(err, ErrNoKcat) {
		t.Skip("kcat is not installed (apt-get install kcat): the Debezium-format records are produced with it")
	}
	require.NoError(t, err, "output so far:\n%s", out.String())
	require.Equal(t, map[string]int{
		"4d47e190-0402-4048-bc2c-89dd54343cdc": 1,
		"9f4c1f3a-6a1e-4d3b-8f1c-2b6f0e7d5a10": 1,
		"0b1e5c2d-3f4a-4b5c-9d6e-7f8091a2b3c4": 1,
	}, effects, "one effect per event id:\n%s", out.String())
	s := out.String()
	require.Contains(t, s, "skipped duplicate of event 4d47e190-0402-4048-bc2c-89dd54343cdc")
	require.Contains(t, s, "dead-lettered a record of outbox.event.order: missing_event_id")
	require.Contains(t, s, `order 1 (key "1"): OrderCreated, event 4d47e190-0402-4048-bc2c-89dd54343cdc`)
	require.Contains(t, s, "5 records: 3 events applied, 1 duplicate skipped, 1 dead-lettered")
	// One key's events are applied in their commit order.
	require.Less(t, strings.Index(s, "OrderCreated, event 4d47e190"), strings.Index(s, "OrderShipped, event 0b1e5c2d"))
}

func TestDecodePayload(t *testing.T) {
	for _, tc := range []struct{ name, in, want, err string }{
		{"escaped string (expand.json.payload off)", `"{\"id\": 1}"`, `{"id": 1}`, ""},
		{"expanded JSON (expand.json.payload on)", `{"id": 1}`, `{"id": 1}`, ""},
		{"surrounding space", " {\"id\": 1}\n", `{"id": 1}`, ""},
		{"not JSON", `{"id": `, "", "not JSON"},
		{"a string without JSON", `"hello"`, "", "does not hold JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodePayload([]byte(tc.in))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, string(got))
		})
	}
}

func FuzzDecodePayload(f *testing.F) {
	f.Add([]byte(`"{\"id\": 1}"`))
	f.Add([]byte(`{"id": 1}`))
	f.Add([]byte(`"x"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodePayload(b)
		if err == nil && !json.Valid(got) {
			t.Fatalf("DecodePayload(%q) = %q, not JSON", b, got)
		}
	})
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
