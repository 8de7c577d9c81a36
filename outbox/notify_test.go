package outbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/outbox"
)

// TestNotifyWakesRelay: with a poll interval of an hour, only the writer's
// notification can wake the relay.
func TestNotifyWakesRelay(t *testing.T) {
	t.Parallel()
	e := newEnv(t, sqlstore.Postgres, func(o *outbox.Options) { o.Notify = true })
	rec := &recorder{}
	cfg := fast(rec)
	cfg.Notify = true
	cfg.PollInterval = time.Hour
	_, stop := runRelay(t, e.ob, cfg)
	defer stop()
	for i := range 3 {
		time.Sleep(100 * time.Millisecond) // the relay is asleep again
		e.write(t, "t", msg("a", i))
		waitFor(t, 20*time.Second, "a notified publish", func() bool { return rec.unique() == i+1 })
	}
}

// BenchmarkWriteNotify measures commits per second of 8 concurrent writers
// on PostgreSQL, each transaction writing one message, without and with
// Options.Notify. Run with:
//
//	go test -run '^$' -bench WriteNotify -benchtime 5s ./outbox/
func BenchmarkWriteNotify(b *testing.B) {
	for _, notify := range []bool{false, true} {
		b.Run(fmt.Sprintf("notify=%v", notify), func(b *testing.B) {
			e := newEnv(b, sqlstore.Postgres, func(o *outbox.Options) { o.Notify = notify })
			const writers = 8
			ctx := context.Background()
			payload := make([]byte, 200)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			next := make(chan int, writers)
			go func() {
				for i := range b.N {
					next <- i
				}
				close(next)
			}()
			for range writers {
				wg.Go(func() {
					for i := range next {
						m := message.NewMessage(randomName("u-"), payload)
						m.Metadata.Set(outbox.KeyMetadata, fmtKey(i%64))
						tx, err := e.db.BeginTx(ctx, nil)
						if err == nil {
							if err = e.ob.Write(ctx, tx, "bench", m); err == nil {
								err = tx.Commit()
							}
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commits/s")
		})
	}
}
