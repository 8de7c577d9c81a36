package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution/memstore"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// genSource is a DLQ of n generated copies, built as they are read: 40
// groups (5 reasons × 8 error shapes) over 4 handlers.
type genSource struct{ n int }

func (g genSource) Read(ctx context.Context, topic string, fn func(dlqops.Entry) error) error {
	reasons := []string{"permanent_error", "retries_exhausted", "delivery_cap", "malformed", "id_collision"}
	for i := range g.n {
		if i%1000 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		m := message.NewMessage("u"+strconv.Itoa(i), []byte(`{"order":`+strconv.Itoa(i)+`}`))
		id := "e" + strconv.Itoa(i)
		m.Metadata.Set(dlqmeta.KeyEntryID, id)
		m.Metadata.Set(dlqmeta.KeyEventID, "evt-"+strconv.Itoa(i))
		m.Metadata.Set(dlqmeta.KeyOriginalTopic, "orders")
		m.Metadata.Set(dlqmeta.KeyHandler, "handler-"+strconv.Itoa(i%4))
		m.Metadata.Set(dlqmeta.KeyReason, reasons[i%5])
		m.Metadata.Set(dlqmeta.KeyErrorClass, "permanent")
		m.Metadata.Set(dlqmeta.KeyError, fmt.Sprintf("shape %d: order %d failed at 10.0.%d.%d:5432", i%8, i, i%256, i%200))
		m.Metadata.Set(dlqmeta.KeyDeadLetteredAt, t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano))
		if err := fn(dlqops.ParseEntry(topic, "0/"+strconv.Itoa(i), m)); err != nil {
			return err
		}
	}
	return nil
}

func (g genSource) Count(context.Context, string) (int, error) { return g.n, nil }

// BenchmarkConsole builds a warm index of IDEMPO_CONSOLE_BENCH_N entries
// (default 100000) on each index, reports the cold build time, then times
// the overview and a filtered list (reason + handler + text search, page
// 3) per iteration and reports their p95.
//
//	go test -run '^$' -bench BenchmarkConsole -benchtime 40x ./dlq/console/
func BenchmarkConsole(b *testing.B) {
	n := 100_000
	if v := os.Getenv("IDEMPO_CONSOLE_BENCH_N"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	for _, kind := range []string{"memory", "sqlite", "postgres", "mysql", "redis"} {
		b.Run(kind, func(b *testing.B) {
			idx := indexes()[kind](b)
			h, err := New(Config{
				DLQs: []string{testDLQ}, Source: genSource{n}, Resolutions: memstore.New(nil), ReadOnly: true, Index: idx,
				Auth: Auth{BasicUser: "u", BasicPassword: "p"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
				Now: func() time.Time { return t0.Add(time.Duration(n) * time.Second) },
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			start := time.Now()
			if err := h.Refresh(ctx); err != nil {
				b.Fatal(err)
			}
			cold := time.Since(start)
			serve := func(path string) time.Duration {
				r := httptest.NewRequest(http.MethodGet, "http://localhost"+path, nil)
				r.SetBasicAuth("u", "p")
				w := httptest.NewRecorder()
				s := time.Now()
				h.ServeHTTP(w, r)
				d := time.Since(s)
				if w.Code != http.StatusOK {
					b.Fatalf("%s: %d %s", path, w.Code, w.Body.String())
				}
				return d
			}
			var over, list []time.Duration
			b.ResetTimer()
			for range b.N {
				over = append(over, serve("/"))
				list = append(list, serve("/dlq/"+testDLQ+"?reason=delivery_cap&handler=handler-2&q=shape+2&page=3"))
			}
			b.StopTimer()
			b.ReportMetric(cold.Seconds(), "cold_build_s")
			b.ReportMetric(p95(over), "overview_p95_ms")
			b.ReportMetric(p95(list), "list_p95_ms")
		})
	}
}

func p95(ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[(len(s)*95+99)/100-1]) / float64(time.Millisecond)
}
