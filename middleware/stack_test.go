package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/retry"
)

// Watermill's map-backed Deduplicator repository (used by the comparison
// benchmark) starts a cleanup goroutine that never stops.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/ThreeDotsLabs/watermill/message/router/middleware.(*mapExpiringKeyRepository).cleanOutLoop"))
}

// Row "key": a message without an event ID is dead-lettered, not processed.
func TestMissingEventIDIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *middleware.Config) { c.EventID = dedup.Metadata("id") })
	_, err := b.run(ok, msg("u1", "p"))
	require.NoError(t, err, "acked once safely in the DLQ")
	require.Zero(t, b.calls.Load(), "the handler must not run without an ID")
	got := b.dlq.on(dlqTopic)
	require.Len(t, got, 1)
	require.Equal(t, dlq.ReasonMissingEventID, got[0].Metadata.Get(dlqmeta.KeyReason))
	require.Contains(t, got[0].Metadata.Get(dlqmeta.KeyError), `metadata "id"`)
	require.Equal(t, "u1", got[0].Metadata.Get(dlqmeta.KeyOriginalUUID))
}

// Row "key": an event ID that cannot be stored (64 KiB, past dedup.MaxIDLen)
// is dead-lettered with its own reason, and the copy carries it shortened,
// not whole. Two such IDs sharing a long prefix stay apart on their copies.
func TestInvalidEventIDIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *middleware.Config) { c.EventID = dedup.Metadata("id") })
	huge := strings.Repeat("x", 64<<10)
	for i, suffix := range []string{"a", "b"} {
		m := msg("u"+suffix, "p")
		m.Metadata.Set("id", huge+suffix)
		_, err := b.run(ok, m)
		require.NoError(t, err, "acked once safely in the DLQ")
		require.Zero(t, b.calls.Load(), "the handler must not run without a usable ID")
		got := b.dlq.on(dlqTopic)
		require.Len(t, got, i+1)
		require.Equal(t, dlq.ReasonInvalidEventID, got[i].Metadata.Get(dlqmeta.KeyReason))
		require.Contains(t, got[i].Metadata.Get(dlqmeta.KeyError), "more than 4096")
		require.LessOrEqual(t, len(got[i].Metadata.Get(dlqmeta.KeyEventID)), dlqmeta.MaxEventIDMetadata, "the copy carries the ID shortened")
		require.Less(t, len(got[i].Metadata.Get(dlqmeta.KeyError)), 1024, "the error text does not carry the ID whole")
	}
	copies := b.dlq.on(dlqTopic)
	require.NotEqual(t, copies[0].Metadata.Get(dlqmeta.KeyEventID), copies[1].Metadata.Get(dlqmeta.KeyEventID))
	require.NotEqual(t, copies[0].UUID, copies[1].UUID, "separate DLQ entries")
}

// An extractor that finds an empty ID is "missing", and the opt-in covers it.
func TestEmptyEventIDIsMissing(t *testing.T) {
	t.Parallel()
	empty := func(*message.Message) (string, error) { return "", nil }
	b := setup(t, func(c *middleware.Config) { c.EventID = empty })
	_, err := b.run(ok, msg("u1", "p"))
	require.NoError(t, err)
	require.Equal(t, dlq.ReasonMissingEventID, b.dlq.on(dlqTopic)[0].Metadata.Get(dlqmeta.KeyReason))
	opt := setup(t, func(c *middleware.Config) { c.EventID = empty; c.AllowMissingEventID = true })
	_, err = opt.run(ok, msg("u1", "p"))
	require.NoError(t, err)
	require.Equal(t, int32(1), opt.calls.Load(), "processed without dedup by opt-in")
}

func TestMissingEventIDOptIn(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *middleware.Config) { c.EventID = dedup.Metadata("id"); c.AllowMissingEventID = true })
	for range 2 {
		_, err := b.run(ok, msg("u1", "p"))
		require.NoError(t, err)
	}
	require.Equal(t, int32(2), b.calls.Load(), "without dedup by explicit opt-in")
	require.Zero(t, b.dlq.count())
}

func TestMissingEventIDDLQDownNacks(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *middleware.Config) { c.EventID = dedup.Metadata("id") })
	b.dlq.fail.Store(1)
	_, err := b.run(ok, msg("u1", "p"))
	require.ErrorIs(t, err, middleware.ErrDeadLetter, "never an ack without the DLQ copy")
	_, err = b.run(ok, msg("u1", "p"))
	require.NoError(t, err)
	require.Len(t, b.dlq.on(dlqTopic), 1)
}

func TestMalformedFromBackendIsDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m := msg("u1", "p")
	m.Metadata.Set(dlqmeta.KeyMalformed, "header x-death is a table")
	_, err := b.run(ok, m)
	require.NoError(t, err)
	require.Zero(t, b.calls.Load())
	require.Equal(t, dlq.ReasonMalformed, b.dlq.on(dlqTopic)[0].Metadata.Get(dlqmeta.KeyReason))
}

// Row "claim" and "done": the handler runs once; duplicates are acked and counted.
func TestDuplicatesSkipped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for range 5 {
		_, err := b.run(ok, msg("e1", "p"))
		require.NoError(t, err)
	}
	require.Equal(t, int32(1), b.calls.Load())
	st := b.stack.Stats()
	require.Equal(t, int64(1), st.Processed)
	require.Equal(t, int64(4), st.Duplicates)
	res := claim(t, b.mem, "e1")
	require.Equal(t, dedup.StatusDone, res.Status)
	require.Equal(t, 1, res.Deliveries, "duplicates of done events do not count")
}

// Row "done" with fingerprints: same ID + other payload → id_collision, on every path.
func TestIDCollision(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *middleware.Config) { c.Fingerprint = true })
	_, err := b.run(ok, msg("e1", "first"))
	require.NoError(t, err)
	_, err = b.run(ok, msg("e1", "first"))
	require.NoError(t, err)
	require.Zero(t, b.dlq.count(), "same payload is a plain duplicate")
	_, err = b.run(ok, msg("e1", "second"))
	require.NoError(t, err)
	require.Equal(t, int32(1), b.calls.Load())
	got := b.dlq.on(dlqTopic)
	require.Len(t, got, 1)
	require.Equal(t, dlq.ReasonIDCollision, got[0].Metadata.Get(dlqmeta.KeyReason))

	// On the in-progress path, too, and the holder is not disturbed.
	held := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour, Fingerprint: dedup.Fingerprint(msg("x", "a"))}
	_, err = b.mem.Claim(context.Background(), key("e2"), held)
	require.NoError(t, err)
	_, err = b.run(ok, msg("e2", "b"))
	require.NoError(t, err)
	require.Len(t, b.dlq.on(dlqTopic), 2)
	require.NoError(t, b.mem.Complete(context.Background(), key("e2"), held.Token, time.Hour))

	// On the acquired path (a released record): the record is given back untouched.
	rel := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour, Fingerprint: dedup.Fingerprint(msg("x", "a"))}
	_, err = b.mem.Claim(context.Background(), key("e3"), rel)
	require.NoError(t, err)
	require.NoError(t, b.mem.Release(context.Background(), key("e3"), rel.Token, true))
	_, err = b.run(ok, msg("e3", "b"))
	require.NoError(t, err)
	require.Len(t, b.dlq.on(dlqTopic), 3)
	_, err = b.run(ok, msg("e3", "a"))
	require.NoError(t, err)
	require.Equal(t, int32(2), b.calls.Load(), "the original payload still processes")
}

// Row "dead-lettered earlier": duplicates are acked, not re-run; a replay may claim.
func TestDeadLetteredThenDuplicateThenReplay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fail := atomic.Bool{}
	fail.Store(true)
	h := func(*message.Message) ([]*message.Message, error) {
		if fail.Load() {
			return nil, retry.Permanent(errors.New("bad input"))
		}
		return nil, nil
	}
	_, err := b.run(h, msg("e1", "p"))
	require.NoError(t, err)
	_, err = b.run(h, msg("e1", "p"))
	require.NoError(t, err)
	require.Equal(t, int32(1), b.calls.Load(), "a dead-lettered event is not re-run by a duplicate")
	require.Len(t, b.dlq.on(dlqTopic), 1)

	fail.Store(false)
	replay := msg("e1", "p")
	replay.Metadata.Set(dlqmeta.KeyReplayID, "r1")
	_, err = b.run(h, replay)
	require.NoError(t, err)
	require.Equal(t, int32(2), b.calls.Load(), "the replay is processed")
	_, err = b.run(h, replay)
	require.NoError(t, err)
	require.Equal(t, int32(2), b.calls.Load(), "once")
	require.Equal(t, dedup.StatusDone, claim(t, b.mem, "e1").Status)
}

// Row "in progress elsewhere": nacked, never run at the same time.
func TestInProgressElsewhereNacks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	other := claim(t, b.mem, "e1")
	require.Equal(t, dedup.StatusAcquired, other.Status)
	_, err := b.run(ok, msg("e1", "p"))
	require.ErrorIs(t, err, middleware.ErrInProgressElsewhere)
	require.Zero(t, b.calls.Load())
	require.Equal(t, int64(1), b.stack.Stats().InProgressNacked)
	require.Equal(t, 1, claim(t, b.mem, "e1").Deliveries, "in-progress nacks do not count")
}

// Concurrent twins in one process: one runs, the others wait and ack.
func TestConcurrentTwinsRunOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var running, maxRunning, effects atomic.Int32
	h := func(*message.Message) ([]*message.Message, error) {
		n := running.Add(1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		effects.Add(1)
		running.Add(-1)
		return nil, nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 10 {
		for range 4 {
			wg.Go(func() {
				_, err := b.run(h, msg("e"+strconv.Itoa(i), "p"))
				errs <- err
			})
		}
	}
	waitGroup(t, &wg, time.Minute, "40 concurrent twins")
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, int32(10), effects.Load(), "each event's effect exactly once")
	require.LessOrEqual(t, maxRunning.Load(), int32(10))
}

// Two stacks (two processes) sharing a store never run one event at once.
func TestTwinsAcrossStacksNeverConcurrent(t *testing.T) {
	t.Parallel()
	a := setup(t)
	b := setup(t, func(c *middleware.Config) { c.Store = a.store })
	inFlight := map[string]*atomic.Int32{}
	var mu sync.Mutex
	var effects, overlap atomic.Int32
	h := func(m *message.Message) ([]*message.Message, error) {
		mu.Lock()
		c, okk := inFlight[m.UUID]
		if !okk {
			c = new(atomic.Int32)
			inFlight[m.UUID] = c
		}
		mu.Unlock()
		if c.Add(1) > 1 {
			overlap.Add(1)
		}
		time.Sleep(2 * time.Millisecond)
		c.Add(-1)
		effects.Add(1)
		return nil, nil
	}
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Minute)
	for i := range 50 {
		for _, s := range []*bundle{a, b} {
			wg.Go(func() {
				for {
					if time.Now().After(deadline) {
						t.Errorf("event e%d still in progress elsewhere after a minute", i)
						return
					}
					_, err := s.run(h, msg("e"+strconv.Itoa(i), "p"))
					if err == nil {
						return
					}
					if !errors.Is(err, middleware.ErrInProgressElsewhere) {
						t.Errorf("unexpected: %v", err)
						return
					}
				}
			})
		}
	}
	waitGroup(t, &wg, 2*time.Minute, "twins across two stacks")
	require.Zero(t, overlap.Load(), "no concurrent twin")
	require.Equal(t, int32(50), effects.Load(), "no double effect")
}

// Row "over the delivery cap": done first; past the cap the handler is not run.
func TestDeliveryCap(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *middleware.Config) { c.MaxDeliveries = 2 })
	// Two earlier deliveries crashed (their claims were taken over).
	for range 2 {
		r := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour}
		_, err := b.mem.Claim(context.Background(), key("e1"), r)
		require.NoError(t, err)
		require.NoError(t, b.mem.Release(context.Background(), key("e1"), r.Token, true))
	}
	_, err := b.run(ok, msg("e1", "p"))
	require.NoError(t, err)
	require.Zero(t, b.calls.Load())
	got := b.dlq.on(dlqTopic)
	require.Len(t, got, 1)
	require.Equal(t, dlq.ReasonDeliveryCap, got[0].Metadata.Get(dlqmeta.KeyReason))
	require.Equal(t, "3", got[0].Metadata.Get(dlqmeta.KeyDeliveries))
	require.Equal(t, dedup.StatusDeadLettered, claim(t, b.mem, "e1").Status)

	// A done event past the cap is a duplicate, not a dead letter.
	r := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: time.Hour, Retention: time.Hour}
	for range 3 {
		r.Token = dedup.NewToken()
		_, err := b.mem.Claim(context.Background(), key("e2"), r)
		require.NoError(t, err)
		require.NoError(t, b.mem.Release(context.Background(), key("e2"), r.Token, true))
	}
	_, err = b.mem.Claim(context.Background(), key("e2"), r)
	require.NoError(t, err)
	require.NoError(t, b.mem.Complete(context.Background(), key("e2"), r.Token, time.Hour))
	_, err = b.run(ok, msg("e2", "p"))
	require.NoError(t, err)
	require.Len(t, b.dlq.on(dlqTopic), 1)

	t.Run("every acquired claim counts", testDeliveryCapCountsClaims)
	t.Run("every redelivery tier counts", testDeliveryCapCountsRedeliveryTiers)
}

// Row "acquired": a copy; Ack/Nack on it are no-ops, counted.
func TestHandlerWorksOnACopy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	orig := msg("e1", "p")
	orig.Metadata.Set("k", "v")
	_, err := b.run(func(m *message.Message) ([]*message.Message, error) {
		require.NotSame(t, orig, m)
		m.Metadata.Set("k", "changed")
		m.Ack()
		return nil, nil
	}, orig)
	require.NoError(t, err)
	require.Equal(t, "v", orig.Metadata.Get("k"))
	select {
	case <-orig.Acked():
		t.Fatal("the handler's Ack must not ack the original")
	default:
	}
	require.Equal(t, int64(1), b.stack.Stats().IgnoredAcks)
}

// Retries with backoff: transient errors and panics are retried in-process.
func TestRetriesTransientAndPanic(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := atomic.Int32{}
	_, err := b.run(func(*message.Message) ([]*message.Message, error) {
		switch n.Add(1) {
		case 1:
			panic("first attempt panics")
		case 2:
			return nil, errors.New("transient")
		}
		return nil, nil
	}, msg("e1", "p"))
	require.NoError(t, err)
	require.Equal(t, int32(3), n.Load())
	st := b.stack.Stats()
	require.Equal(t, int64(2), st.Retries)
	require.Equal(t, int64(1), st.Panics)
	require.Equal(t, int64(1), st.Processed)
	require.Zero(t, b.dlq.count())
}

func TestRetriesExhaustedGoToDLQWithMetadata(t *testing.T) {
	t.Parallel()
	b := setup(t)
	orig := msg("e1", "payload")
	orig.Metadata.Set("tenant", "acme")
	_, err := b.run(func(*message.Message) ([]*message.Message, error) {
		panic("always")
	}, orig)
	require.NoError(t, err)
	require.Equal(t, int32(3), b.calls.Load(), "MaxAttempts attempts")
	got := b.dlq.on(dlqTopic)
	require.Len(t, got, 1)
	c := got[0]
	require.Equal(t, "payload", string(c.Payload))
	require.Equal(t, "acme", c.Metadata.Get("tenant"), "original metadata preserved")
	require.Equal(t, dlq.ReasonRetriesExhausted, c.Metadata.Get(dlqmeta.KeyReason))
	require.Equal(t, "panic", c.Metadata.Get(dlqmeta.KeyErrorClass))
	require.Contains(t, c.Metadata.Get(dlqmeta.KeyPanicStack), "goroutine")
	require.Equal(t, "3", c.Metadata.Get(dlqmeta.KeyAttempts))
	require.Equal(t, "1", c.Metadata.Get(dlqmeta.KeyDeliveries))
	require.Equal(t, "e1", c.Metadata.Get(dlqmeta.KeyEventID))
	require.Equal(t, "default", c.Metadata.Get(dlqmeta.KeyScope))
	require.NotEmpty(t, c.Metadata.Get(dlqmeta.KeyFirstFailure))
	require.NotEmpty(t, c.Metadata.Get(dlqmeta.KeyLastFailure))
	require.Equal(t, c.UUID, c.Metadata.Get(dlqmeta.KeyEntryID))
	require.Equal(t, dedup.StatusDeadLettered, claim(t, b.mem, "e1").Status)
}

// Row "permanent error": straight to the DLQ, ack only after the publish;
// a failed publish nacks and the redelivery dead-letters without a re-run.
func TestPermanentErrorAndDLQOutage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.dlq.fail.Store(1)
	h := func(*message.Message) ([]*message.Message, error) {
		return nil, retry.Permanent(errors.New("schema mismatch"))
	}
	_, err := b.run(h, msg("e1", "p"))
	require.ErrorIs(t, err, middleware.ErrDeadLetter)
	require.Equal(t, int32(1), b.calls.Load(), "permanent errors are not retried")
	require.Zero(t, b.dlq.count())

	_, err = b.run(h, msg("e1", "p"))
	require.NoError(t, err)
	require.Equal(t, int32(1), b.calls.Load(), "the redelivery publishes without running the handler")
	got := b.dlq.on(dlqTopic)
	require.Len(t, got, 1)
	require.Equal(t, dlq.ReasonPermanent, got[0].Metadata.Get(dlqmeta.KeyReason))
	require.Equal(t, "schema mismatch", got[0].Metadata.Get(dlqmeta.KeyError))
	require.Equal(t, int64(1), b.stack.Stats().DLQPublishFailed)
}

// Row "handler outputs": published before completion, UUIDs derived from the
// event ID; the router gets none; a failed publish nacks.
func TestOutputsPublishedBeforeCompletion(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.out.before = func(_ string, msgs ...*message.Message) {
		res := claim(t, b.mem, "e1")
		require.Equal(t, dedup.StatusInProgress, res.Status, "completion must not be recorded before outputs are out")
	}
	h := func(*message.Message) ([]*message.Message, error) {
		return []*message.Message{message.NewMessage("random-1", []byte("a")), message.NewMessage("random-2", []byte("b"))}, nil
	}
	outs, err := b.run(h, msg("e1", "p"))
	require.NoError(t, err)
	require.Empty(t, outs, "the router is handed none")
	got := b.out.on("out")
	require.Len(t, got, 2)
	require.Equal(t, middleware.OutputUUID("default", "e1", 0), got[0].UUID)
	require.Equal(t, middleware.OutputUUID("default", "e1", 1), got[1].UUID)
	require.NotEqual(t, got[0].UUID, got[1].UUID)
	require.Equal(t, dedup.StatusDone, claim(t, b.mem, "e1").Status)
}

func TestOutputPublishFailureNacks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.out.fail.Store(100)
	h := func(*message.Message) ([]*message.Message, error) {
		return []*message.Message{message.NewMessage("x", []byte("a"))}, nil
	}
	_, err := b.run(h, msg("e1", "p"))
	require.ErrorIs(t, err, middleware.ErrOutputPublish)
	res := claim(t, b.mem, "e1")
	require.Equal(t, dedup.StatusAcquired, res.Status, "the claim was released")
	require.Equal(t, 2, res.Deliveries, "the failed delivery counts")
}

// Row "success": complete failures still ack (counted); stale token acks (counted).
func TestCompleteFailureStillAcks(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *middleware.Config) { c.Lease = middleware.MinLease })
	inject(&b.store.completeErr, errors.New("store down"))
	_, err := b.run(ok, msg("e1", "p"))
	require.NoError(t, err)
	require.Equal(t, int64(1), b.stack.Stats().CompleteFailed)
	require.Greater(t, b.store.completes.Load(), int32(1), "completion is retried while the lease lasts")
}

func TestLeaseLostBeforeCompleteAcks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	inject(&b.store.completeErr, fmt.Errorf("x: %w", dedup.ErrLeaseLost))
	_, err := b.run(ok, msg("e1", "p"))
	require.NoError(t, err)
	st := b.stack.Stats()
	require.Equal(t, int64(1), st.LeaseLost)
	require.Equal(t, int32(1), b.store.completes.Load(), "a stale token is not retried")
}

// Row "acquired": the lease is extended while the handler runs.
func TestLeaseExtendedDuringLongHandler(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *middleware.Config) { c.Lease = middleware.MinLease })
	h := func(m *message.Message) ([]*message.Message, error) {
		time.Sleep(2500 * time.Millisecond)
		return nil, m.Context().Err()
	}
	done := make(chan error, 1)
	go func() { _, err := b.run(h, msg("e1", "p")); done <- err }()
	time.Sleep(1500 * time.Millisecond)
	require.Equal(t, dedup.StatusInProgress, claim(t, b.mem, "e1").Status, "the lease outlived its first term")
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the handler did not return within 30s")
	}
	require.Positive(t, b.stack.Stats().LeaseExtensions)
	require.Equal(t, dedup.StatusDone, claim(t, b.mem, "e1").Status)
}

// If the lease cannot be extended before it runs out, the handler's context
// is cancelled and the message nacked.
func TestLeaseNotExtendableCancelsHandler(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *middleware.Config) { c.Lease = middleware.MinLease })
	inject(&b.store.extendErr, errors.New("store slow"))
	h := func(m *message.Message) ([]*message.Message, error) {
		select {
		case <-m.Context().Done():
			return nil, m.Context().Err()
		case <-time.After(5 * time.Second):
			return nil, nil
		}
	}
	_, err := b.run(h, msg("e1", "p"))
	require.ErrorIs(t, err, dedup.ErrLeaseLost)
	require.Equal(t, int64(1), b.stack.Stats().LeaseLost)
	require.Zero(t, b.dlq.count(), "a lost lease is not a poison message")
}

// Row "cancellation": backoff waits end at once; the claim is released
// uncounted; never dead-lettered.
func TestCancellationReleasesAndNacks(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *middleware.Config) {
		c.Retry = retry.Policy{InitialInterval: time.Hour, MaxInterval: time.Hour, MaxAttempts: 5, MaxElapsed: -1}
		c.Retention = 100 * time.Hour
	})
	ctx, cancel := context.WithCancel(context.Background())
	m := msg("e1", "p")
	m.SetContext(ctx)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	start := time.Now()
	// A backoff wait that ignored the cancellation would last an hour.
	err := b.runWithin(t, 30*time.Second, func(*message.Message) ([]*message.Message, error) { return nil, errors.New("transient") }, m)
	require.ErrorIs(t, err, middleware.ErrCancelled)
	require.Less(t, time.Since(start), time.Hour/2, "the backoff wait ended on cancel")
	require.Zero(t, b.dlq.count())
	res := claim(t, b.mem, "e1")
	require.Equal(t, dedup.StatusAcquired, res.Status, "released")
	require.Equal(t, 1, res.Deliveries, "a cancellation does not count")
}

// A handler's own context.Canceled while nothing of the stack's is done is an
// ordinary failure: retried in-process, then dead-lettered, never a
// release-and-nack that could loop.
func TestHandlerReturningCanceledIsAnOrdinaryFailure(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, err := b.run(func(*message.Message) ([]*message.Message, error) { return nil, context.Canceled }, msg("e1", "p"))
	require.NoError(t, err, "acked once in the DLQ")
	require.Equal(t, int32(3), b.calls.Load(), "retried like any failure (MaxAttempts 3)")
	require.Equal(t, 1, b.dlq.count())
	require.Equal(t, dlq.ReasonRetriesExhausted, b.dlq.on(dlqTopic)[0].Metadata.Get(dlqmeta.KeyReason))
	require.Equal(t, dedup.StatusDeadLettered, claim(t, b.mem, "e1").Status)
}

// Store outage on claim: nack, never processed without dedup, not counted.
func TestStoreOutageOnClaimNacks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	inject(&b.store.claimErr, errors.New("connection refused"))
	_, err := b.run(ok, msg("e1", "p"))
	require.ErrorIs(t, err, middleware.ErrStore)
	require.Zero(t, b.calls.Load())
	inject(&b.store.claimErr, nil)
	_, err = b.run(ok, msg("e1", "p"))
	require.NoError(t, err)
	require.Equal(t, int32(1), b.calls.Load())
	require.Equal(t, 1, claim(t, b.mem, "e1").Deliveries)
}

func TestConfigErrorsNameTheField(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  middleware.Config
		want string
	}{
		{middleware.Config{}, "Store is required"},
		{middleware.Config{Store: setup(t).mem}, "DLQ.Publisher is required"},
		{middleware.Config{Store: setup(t).mem, DLQ: dlq.Config{Publisher: newCapture()}, Lease: time.Hour, Retention: time.Minute}, "Retention"},
		{middleware.Config{Store: setup(t).mem, DLQ: dlq.Config{Publisher: newCapture()}, MaxDeliveries: -3}, "MaxDeliveries"},
		{middleware.Config{Store: setup(t).mem, DLQ: dlq.Config{Publisher: newCapture()}, Transactional: true}, "TxCompleter"},
		{middleware.Config{Store: setup(t).mem, DLQ: dlq.Config{Publisher: newCapture()}, Retry: retry.Policy{Jitter: 3}}, "Jitter"},
	} {
		_, err := middleware.New(tc.cfg)
		require.ErrorIs(t, err, middleware.ErrInvalidConfig)
		require.ErrorContains(t, err, tc.want)
	}
}
