package redisstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/redisstore"
)

// defaultStressEvents: 50k events (60k deliveries) take about 11 s with -race
// on two cores. IDEMPO_STRESS_EVENTS overrides it.
const defaultStressEvents = 50_000

// TestStressNoTwinsNoDoubleEffects runs 8 consumers over a stream in which
// 20% of the deliveries are duplicates placed close to their originals, so
// twins meet concurrently. A second acquired claim while one is held fails the
// test, and every event must have had its effect exactly once. 2% of the
// acquired deliveries fail before their effect and release the claim, so
// takeovers after a release are exercised too.
//
// It runs once with sharing (the default), where the consumers' calls share
// pipelines, and once with one round trip per call (on a fifth of the
// events).
func TestStressNoTwinsNoDoubleEffects(t *testing.T) {
	t.Parallel()
	events := defaultStressEvents
	if v := os.Getenv("IDEMPO_STRESS_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "IDEMPO_STRESS_EVENTS")
		events = n
	}
	t.Run("shared", func(t *testing.T) { stress(t, events, redisstore.Options{}) })
	t.Run("unshared", func(t *testing.T) { stress(t, max(events/5, 1), redisstore.Options{DisableSharing: true}) })
}

func stress(t *testing.T, events int, o redisstore.Options) {
	const consumers = 8
	b := setupWith(t, o)
	scope := "stress"

	// Originals at their index, duplicates within ±16 places of theirs.
	type delivery struct {
		event int
		pos   float64
	}
	rng := rand.New(rand.NewPCG(1, 2))
	stream := make([]delivery, 0, events+events/5)
	for i := range events {
		stream = append(stream, delivery{i, float64(i)})
	}
	for range events / 5 {
		e := rng.IntN(events)
		stream = append(stream, delivery{e, float64(e) + rng.Float64()*32 - 16})
	}
	sort.Slice(stream, func(i, j int) bool { return stream[i].pos < stream[j].pos })

	var (
		flight     = &inFlight{n: make([]atomic.Int32, events)}
		effects    = make([]atomic.Int32, events)
		duplicates atomic.Int64
		busy       atomic.Int64
		failures   atomic.Int64
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	queue := make(chan int, 1024)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range consumers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			for e := range queue {
				k := dedup.Key{Scope: scope, ID: fmt.Sprintf("evt-%07d", e)}
				for {
					r := claimReq(30*time.Second, 10*time.Minute)
					res, err := b.store.Claim(ctx, k, r)
					if err != nil {
						t.Errorf("Claim(%s): %v", k, err)
						return
					}
					if res.Status == dedup.StatusInProgress {
						// "Nack": the twin is redelivered a little later.
						busy.Add(1)
						time.Sleep(200 * time.Microsecond)
						continue
					}
					if res.Status != dedup.StatusAcquired {
						if res.Status != dedup.StatusDone {
							t.Errorf("Claim(%s): unexpected status %v", k, res.Status)
							return
						}
						duplicates.Add(1)
						break
					}
					flight.enter(e)
					if rng.IntN(50) == 0 {
						// The handler failed before its effect: give it back.
						failures.Add(1)
						flight.leave(e)
						if err := b.store.Release(ctx, k, r.Token, true); err != nil {
							t.Errorf("Release(%s): %v", k, err)
							return
						}
						continue
					}
					effects[e].Add(1)
					flight.leave(e)
					if err := b.store.Complete(ctx, k, r.Token, 10*time.Minute); err != nil {
						t.Errorf("Complete(%s): %v", k, err)
						return
					}
					break
				}
			}
		})
	}
	for _, d := range stream {
		queue <- d.event
	}
	close(queue)
	wg.Wait()
	elapsed := time.Since(start)

	require.Zero(t, flight.twins.Load(), "two deliveries of one event held a claim at the same time")
	for i := range events {
		require.Equal(t, int32(1), effects[i].Load(), "event %d: effect count", i)
	}
	t.Logf("%d events, %d deliveries, %d consumers in %v: %d duplicates suppressed, %d in-progress nacks, %d released failures",
		events, len(stream), consumers, elapsed.Round(time.Millisecond), duplicates.Load(), busy.Load(), failures.Load())
}
