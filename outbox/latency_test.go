package outbox_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/outbox"
)

// stamp is a publisher that sends each message's arrival time.
type stamp chan time.Time

func (s stamp) Publish(_ string, msgs ...*message.Message) error {
	for range msgs {
		s <- time.Now()
	}
	return nil
}
func (s stamp) Close() error { return nil }

// BenchmarkCommitToPublish measures, on an idle PostgreSQL outbox, the time
// from a transaction's commit to the relay's Publish call, polling every
// 10 ms (the default) or woken by LISTEN/NOTIFY. Run with:
//
//	go test -run '^$' -bench CommitToPublish -benchtime 200x ./outbox/
func BenchmarkCommitToPublish(b *testing.B) {
	for _, notify := range []bool{false, true} {
		b.Run(fmt.Sprintf("notify=%v", notify), func(b *testing.B) {
			e := newEnv(b, sqlstore.Postgres, func(o *outbox.Options) { o.Notify = notify })
			got := make(stamp, 16)
			_, stop := runRelay(b, e.ob, outbox.RelayConfig{Publisher: got, Notify: notify})
			defer stop()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				time.Sleep(time.Duration(7*i%31) * time.Millisecond) // commits at random phases of the poll
				e.write(b, "t", msg("k", i))
				committed := time.Now()
				select {
				case at := <-got:
					lat = append(lat, at.Sub(committed))
				case <-time.After(20 * time.Second):
					b.Fatal("not published in 20s")
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
