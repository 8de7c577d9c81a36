package outbox_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/outbox"
)

// discard is a publisher that drops messages: the relay's own cost.
type discard struct{}

func (discard) Publish(string, ...*message.Message) error { return nil }
func (discard) Close() error                              { return nil }

// BenchmarkRelayDrain measures how fast one relay drains a pre-filled
// table into a publisher that drops messages, deleting sent rows at once
// (Retention 0) or marking them sent (Retention 1h). Run with:
//
//	go test -run '^$' -bench RelayDrain -benchtime 20000x ./outbox/
func BenchmarkRelayDrain(b *testing.B) {
	for _, d := range dialects {
		for _, retention := range []time.Duration{0, time.Hour} {
			b.Run(fmt.Sprintf("%s/retention=%v", d, retention), func(b *testing.B) {
				e := newEnv(b, d, nil)
				payload := make([]byte, 200)
				for start := 0; start < b.N; start += 500 {
					ms := make([]*message.Message, 0, 500)
					for i := start; i < min(start+500, b.N); i++ {
						m := message.NewMessage(randomName("u-"), payload)
						m.Metadata.Set(outbox.KeyMetadata, fmtKey(i%64))
						ms = append(ms, m)
					}
					e.write(b, "bench", ms...)
				}
				cfg := outbox.RelayConfig{Publisher: discard{}, Retention: retention, Lease: 10 * time.Second}
				b.ResetTimer()
				start := time.Now()
				r, stop := runRelay(b, e.ob, cfg)
				for r.Stats().Published < int64(b.N) {
					time.Sleep(time.Millisecond)
				}
				elapsed := time.Since(start)
				stop()
				b.ReportMetric(float64(r.Stats().Published)/elapsed.Seconds(), "rows/s")
			})
		}
	}
}
