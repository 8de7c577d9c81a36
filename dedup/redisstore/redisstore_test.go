package redisstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/deduptest"
	"github.com/idempo/idempo/dedup/redisstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// redisAddr is the shared test server; CI starts it. IDEMPO_REDIS_ADDR overrides.
func redisAddr() string {
	if a := os.Getenv("IDEMPO_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// newClient connects to the shared server and fails the test, with a hint,
// when it cannot be reached. Tests never skip for a missing Redis.
func newClient(tb testing.TB, opts *redis.Options) *redis.Client {
	tb.Helper()
	if opts == nil {
		opts = &redis.Options{}
	}
	if opts.Addr == "" {
		opts.Addr = redisAddr()
	}
	opts.ContextTimeoutEnabled = true
	c := redis.NewClient(opts)
	tb.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		tb.Fatalf("redisstore tests need a Redis server at %s (start one with `redis-server --save '' --appendonly no`, "+
			"or point IDEMPO_REDIS_ADDR at one): %v", opts.Addr, err)
	}
	return c
}

func randomPrefix(tb testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "idempo-test-" + hex.EncodeToString(b[:]) + ":"
}

// dropPrefix deletes every key under prefix when the test ends.
func dropPrefix(tb testing.TB, c redis.UniversalClient, prefix string) {
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		batch := make([]string, 0, 1000)
		for iter.Next(ctx) {
			batch = append(batch, iter.Val())
			if len(batch) == cap(batch) {
				_ = c.Unlink(ctx, batch...).Err()
				batch = batch[:0]
			}
		}
		if len(batch) > 0 {
			_ = c.Unlink(ctx, batch...).Err()
		}
	})
}

type bundle struct {
	client *redis.Client
	store  *redisstore.Store
	prefix string
	ctx    context.Context
}

func setup(tb testing.TB) *bundle {
	tb.Helper()
	return setupWith(tb, redisstore.Options{})
}

// setupWith is setup with options (Prefix is set here).
func setupWith(tb testing.TB, o redisstore.Options) *bundle {
	tb.Helper()
	c := newClient(tb, nil)
	prefix := randomPrefix(tb)
	dropPrefix(tb, c, prefix)
	o.Prefix = prefix
	st, err := redisstore.New(c, &o)
	require.NoError(tb, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	tb.Cleanup(cancel)
	return &bundle{client: c, store: st, prefix: prefix, ctx: ctx}
}

func claimReq(lease, retention time.Duration) dedup.ClaimRequest {
	return dedup.ClaimRequest{Token: dedup.NewToken(), Lease: lease, Retention: retention}
}

// reopener returns a Features.Reopen that opens a second store, on a client
// of its own, under the prefix of the store it is given (prefixes maps each
// store newStore returned to its prefix).
func reopener(prefixes *sync.Map, o redisstore.Options) func(t *testing.T, st dedup.Store) dedup.Store {
	return func(t *testing.T, st dedup.Store) dedup.Store {
		p, ok := prefixes.Load(st)
		require.True(t, ok, "reopen: unknown store %p", st)
		o.Prefix = p.(string)
		fresh, err := redisstore.New(newClient(t, nil), &o)
		require.NoError(t, err)
		return fresh
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var prefixes sync.Map
	prefixes.Store(dedup.Store(b.store), b.prefix)
	deduptest.Run(t, func(*testing.T) dedup.Store { return b.store }, deduptest.Features{
		Parallel: true, Granularity: time.Millisecond, Reopen: reopener(&prefixes, redisstore.Options{}),
	})
}

// The conformance suite without sharing (TestConformance shares: its
// parallel cases use one store, so their calls meet in pipelines).
func TestConformanceUnshared(t *testing.T) {
	t.Parallel()
	o := redisstore.Options{DisableSharing: true}
	b := setupWith(t, o)
	var prefixes sync.Map
	prefixes.Store(dedup.Store(b.store), b.prefix)
	deduptest.Run(t, func(*testing.T) dedup.Store { return b.store }, deduptest.Features{
		Parallel: true, Granularity: time.Millisecond, Reopen: reopener(&prefixes, o),
	})
}

func TestConformanceStorePerCase(t *testing.T) {
	t.Parallel()
	var prefixes sync.Map
	deduptest.Run(t, func(t *testing.T) dedup.Store {
		b := setup(t)
		prefixes.Store(dedup.Store(b.store), b.prefix)
		return b.store
	}, deduptest.Features{Parallel: true, Granularity: time.Millisecond, Reopen: reopener(&prefixes, redisstore.Options{})})
}

// commandCounter is a go-redis hook that counts the commands sent.
type commandCounter struct {
	mu    sync.Mutex
	names []string
}

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.mu.Lock()
		c.names = append(c.names, cmd.Name())
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.mu.Lock()
		for _, cmd := range cmds {
			c.names = append(c.names, "pipeline:"+cmd.Name())
		}
		c.mu.Unlock()
		return next(ctx, cmds)
	}
}

// take returns the commands counted since the last call and resets the count.
func (c *commandCounter) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.names
	c.names = nil
	return n
}

func TestOneRoundTripPerCall(t *testing.T) {
	t.Parallel()
	b := setup(t)
	hook := &commandCounter{}
	b.client.AddHook(hook)
	scope := "round-trips"

	// Warm up: the first call of each script on a server may need EVAL after
	// a NOSCRIPT reply.
	warm := dedup.Key{Scope: scope, ID: "warm-up"}
	r := claimReq(time.Minute, time.Hour)
	_, err := b.store.Claim(b.ctx, warm, r)
	require.NoError(t, err)
	require.NoError(t, b.store.Complete(b.ctx, warm, r.Token, time.Hour))
	hook.take()

	for i := range 20 {
		k := dedup.Key{Scope: scope, ID: fmt.Sprintf("event-%d", i)}
		r := claimReq(time.Minute, time.Hour)
		res, err := b.store.Claim(b.ctx, k, r)
		require.NoError(t, err)
		require.Equal(t, dedup.StatusAcquired, res.Status)
		require.Equal(t, []string{"evalsha"}, hook.take(), "Claim is exactly one command")
		require.NoError(t, b.store.Complete(b.ctx, k, r.Token, time.Hour))
		require.Equal(t, []string{"evalsha"}, hook.take(), "Complete is exactly one command")
		res, err = b.store.Claim(b.ctx, k, claimReq(time.Minute, time.Hour))
		require.NoError(t, err)
		require.Equal(t, dedup.StatusDone, res.Status)
		require.Equal(t, []string{"evalsha"}, hook.take(), "a duplicate costs one command")
	}
}

func TestValidationMakesNoRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t)
	hook := &commandCounter{}
	b.client.AddHook(hook)
	bad := dedup.Key{Scope: "s", ID: ""}
	good := dedup.Key{Scope: "s", ID: "x"}
	tok := dedup.NewToken()

	_, err := b.store.Claim(b.ctx, bad, claimReq(time.Second, time.Second))
	require.ErrorIs(t, err, dedup.ErrInvalidKey)
	require.ErrorContains(t, err, "empty", "the error says what is wrong with the key")
	require.ErrorIs(t, b.store.Extend(b.ctx, bad, tok, time.Second), dedup.ErrInvalidKey)
	require.ErrorIs(t, b.store.Complete(b.ctx, bad, tok, time.Second), dedup.ErrInvalidKey)
	require.ErrorIs(t, b.store.Release(b.ctx, bad, tok, true), dedup.ErrInvalidKey)
	require.ErrorIs(t, b.store.MarkDueForDLQ(b.ctx, bad, tok, nil), dedup.ErrInvalidKey)
	require.ErrorIs(t, b.store.MarkDeadLettered(b.ctx, bad, tok, time.Second), dedup.ErrInvalidKey)

	_, err = b.store.Claim(b.ctx, good, dedup.ClaimRequest{Token: tok, Lease: time.Second})
	require.ErrorIs(t, err, dedup.ErrInvalidRequest)
	require.ErrorContains(t, err, "Retention", "the error names the field")
	require.ErrorIs(t, b.store.Extend(b.ctx, good, tok, 0), dedup.ErrInvalidRequest)
	require.ErrorIs(t, b.store.Complete(b.ctx, good, tok, -time.Second), dedup.ErrInvalidRequest)
	require.ErrorIs(t, b.store.MarkDeadLettered(b.ctx, good, tok, 0), dedup.ErrInvalidRequest)
	require.ErrorIs(t, b.store.MarkDueForDLQ(b.ctx, good, tok, make([]byte, dedup.MaxFailureLen+1)), dedup.ErrInvalidRequest)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = b.store.Claim(ctx, good, claimReq(time.Second, time.Second))
	require.ErrorIs(t, err, context.Canceled)
	require.Contains(t, err.Error(), "claim s/x")

	require.Empty(t, hook.take(), "rejected calls must not reach Redis")
}

func TestErrorsNameOperationAndKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := dedup.Key{Scope: "orders", ID: "order-42"}
	err := b.store.Complete(b.ctx, k, dedup.NewToken(), time.Minute)
	require.ErrorIs(t, err, dedup.ErrLeaseLost)
	require.Contains(t, err.Error(), "complete orders/order-42")
	require.Contains(t, err.Error(), "record absent")

	r := claimReq(time.Minute, time.Hour)
	_, err = b.store.Claim(b.ctx, k, r)
	require.NoError(t, err)
	err = b.store.Extend(b.ctx, k, dedup.NewToken(), time.Minute)
	require.ErrorIs(t, err, dedup.ErrLeaseLost)
	require.Contains(t, err.Error(), "extend orders/order-42")
	require.Contains(t, err.Error(), "held by other token")
	require.NoError(t, b.store.Complete(b.ctx, k, r.Token, time.Hour))
	err = b.store.MarkDueForDLQ(b.ctx, k, r.Token, []byte("late"))
	require.ErrorIs(t, err, dedup.ErrLeaseLost)
	require.Contains(t, err.Error(), "record done")

	// A Redis error reply is wrapped, not flattened: a key of the wrong
	// type (a hash, as the record layout before 2026-11 was).
	k2 := dedup.Key{Scope: "orders", ID: "clobbered"}
	require.NoError(t, b.client.HSet(b.ctx, b.store.RedisKey(k2), "state", "done").Err())
	_, err = b.store.Claim(b.ctx, k2, claimReq(time.Minute, time.Hour))
	var rerr redis.Error
	require.ErrorAs(t, err, &rerr)
	require.Contains(t, err.Error(), "claim orders/clobbered")
	require.Contains(t, err.Error(), "WRONGTYPE")
}

func TestKeyLayout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	keys := []dedup.Key{
		{Scope: "a:b", ID: "c"},
		{Scope: "a", ID: "b:c"},
		{Scope: "a", ID: "\x00"},
		{Scope: "a", ID: "\x00\x00"},
		{Scope: "a", ID: "{tag}"},
		{Scope: "a}", ID: "{"},
	}
	seen := map[string]bool{}
	for _, k := range keys {
		rk := b.store.RedisKey(k)
		require.False(t, seen[rk], "distinct keys map to distinct Redis keys")
		seen[rk] = true
		require.True(t, strings.HasPrefix(rk, b.prefix+"{"))
		require.True(t, strings.HasSuffix(rk, "}"))
		require.Len(t, rk, len(b.prefix)+2+43, "prefix, braces and 43 base64url characters")
		// The hash tag is the whole digest: one record, one slot.
		tag := rk[len(b.prefix)+1 : len(rk)-1]
		require.NotContains(t, tag, "{")
		require.NotContains(t, tag, "}")
	}
	def, err := redisstore.New(b.client, &redisstore.Options{EvictionPolicyCheck: redisstore.EvictionCheckOff})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(def.RedisKey(keys[0]), "idempo:{"), "the default prefix")
}

func TestNewRejectsBadOptions(t *testing.T) {
	t.Parallel()
	_, err := redisstore.New(nil, nil)
	require.ErrorContains(t, err, "nil client")
	c := newClient(t, nil)
	_, err = redisstore.New(c, &redisstore.Options{Prefix: "app:{x}:"})
	require.ErrorContains(t, err, "Options.Prefix")
	_, err = redisstore.New(c, &redisstore.Options{EvictionPolicyCheck: 42})
	require.ErrorContains(t, err, "Options.EvictionPolicyCheck")
}

// TestRecordOnTheServer shows the record's layout and that expiry is set on
// the server (SET … PX), not computed by the client.
func TestRecordOnTheServer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := dedup.Key{Scope: "orders", ID: "order-7"}
	r := claimReq(30*time.Second, time.Hour)
	r.Fingerprint = bytes.Repeat([]byte{0xab}, 32)
	_, err := b.store.Claim(b.ctx, k, r)
	require.NoError(t, err)
	rk := b.store.RedisKey(k)
	rec := readRecord(t, b.ctx, b.client, rk)
	require.Equal(t, "in_progress", rec.state)
	require.Equal(t, string(r.Token), rec.token)
	require.Equal(t, int64(1), rec.deliveries)
	require.Equal(t, string(r.Fingerprint), rec.fp)
	require.Empty(t, rec.replay)
	tm, err := b.client.Time(b.ctx).Result()
	require.NoError(t, err)
	require.InDelta(t, tm.Add(30*time.Second).UnixMilli(), rec.leaseUntil, float64(10*time.Second/time.Millisecond), "lease_until is on the server's clock")
	ttl, err := b.client.PTTL(b.ctx, rk).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, 30*time.Minute)
	require.LessOrEqual(t, ttl, time.Hour)

	require.NoError(t, b.store.Complete(b.ctx, k, r.Token, 5*time.Minute))
	require.Equal(t, "done", readRecord(t, b.ctx, b.client, rk).state)
	ttl, err = b.client.PTTL(b.ctx, rk).Result()
	require.NoError(t, err)
	require.LessOrEqual(t, ttl, 5*time.Minute, "Complete sets the retention from now")
}

// record is a record's fields as the server holds them.
type record struct {
	state, token, fp, replay, failure string
	leaseUntil, deliveries            int64
}

// readRecord reads the record at key rk (a MessagePack string) on the
// server.
func readRecord(t *testing.T, ctx context.Context, c redis.UniversalClient, rk string) record {
	t.Helper()
	v, err := c.Eval(ctx, `local v = redis.call('GET', KEYS[1]) return {cmsgpack.unpack(v)}`, []string{rk}).Slice()
	require.NoError(t, err)
	require.Len(t, v, 7, "the record's fields")
	var r record
	var ok [7]bool
	r.state, ok[0] = v[0].(string)
	r.token, ok[1] = v[1].(string)
	r.leaseUntil, ok[2] = v[2].(int64)
	r.deliveries, ok[3] = v[3].(int64)
	r.fp, ok[4] = v[4].(string)
	r.replay, ok[5] = v[5].(string)
	r.failure, ok[6] = v[6].(string)
	require.Equal(t, [7]bool{true, true, true, true, true, true, true}, ok, "field types of %v", v)
	return r
}

// TestEmptyDueNote: a due-for-DLQ note may be empty and is still reported non-nil.
func TestEmptyDueNote(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := dedup.Key{Scope: "s", ID: "empty-note"}
	r := claimReq(time.Minute, time.Hour)
	_, err := b.store.Claim(b.ctx, k, r)
	require.NoError(t, err)
	require.NoError(t, b.store.MarkDueForDLQ(b.ctx, k, r.Token, nil))
	res, err := b.store.Claim(b.ctx, k, claimReq(time.Minute, time.Hour))
	require.NoError(t, err)
	require.Equal(t, dedup.StatusAcquired, res.Status)
	require.NotNil(t, res.DueForDLQ)
	require.Empty(t, res.DueForDLQ)
}

// TestSubMillisecondDurations: durations are rounded up to whole milliseconds,
// never down to zero (which would delete the record at once).
func TestSubMillisecondDurations(t *testing.T) {
	t.Parallel()
	b := setup(t)
	k := dedup.Key{Scope: "s", ID: "tiny"}
	r := claimReq(time.Microsecond, time.Minute)
	res, err := b.store.Claim(b.ctx, k, r)
	require.NoError(t, err)
	require.Equal(t, dedup.StatusAcquired, res.Status)
	require.NoError(t, b.store.Extend(b.ctx, k, r.Token, time.Minute))
	require.NoError(t, b.store.Complete(b.ctx, k, r.Token, 500*time.Microsecond+time.Minute))
}

// TestMemoryUsage reports the server memory one done record takes with the
// default prefix (the figure quoted in docs/stores-redis.md). It asserts only
// a loose bound. The scope is random, so the keys are the test's own.
func TestMemoryUsage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	st, err := redisstore.New(b.client, nil)
	require.NoError(t, err)
	scope := "orders-" + randomPrefix(t)[len("idempo-test-"):]
	var keys []string
	t.Cleanup(func() { _ = b.client.Unlink(context.Background(), keys...).Err() })
	measure := func(series int, fp []byte) int64 {
		const n = 20
		var total int64
		for i := range n {
			k := dedup.Key{Scope: scope, ID: fmt.Sprintf("9f1c2a8e-4b7d-4e3a-%04d-%012d", series, i)}
			keys = append(keys, st.RedisKey(k))
			r := claimReq(time.Minute, time.Hour)
			r.Fingerprint = fp
			_, err := st.Claim(b.ctx, k, r)
			require.NoError(t, err)
			require.NoError(t, st.Complete(b.ctx, k, r.Token, time.Hour))
			used, err := b.client.MemoryUsage(b.ctx, st.RedisKey(k), 0).Result()
			require.NoError(t, err)
			total += used
		}
		return total / n
	}
	plain := measure(1, nil)
	withFP := measure(2, bytes.Repeat([]byte{7}, 32))
	t.Logf("MEMORY USAGE of a done record (prefix %q): %d bytes without fingerprint, %d bytes with a 32-byte fingerprint",
		redisstore.DefaultPrefix, plain, withFP)
	require.Less(t, withFP, int64(1024))
}

// TestEvictionCheckSharedServer: the shared test server runs with noeviction.
func TestEvictionCheckSharedServer(t *testing.T) {
	t.Parallel()
	c := newClient(t, nil)
	var logs syncBuffer
	_, err := redisstore.New(c, &redisstore.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	require.Empty(t, logs.String())
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// inFlight tracks, per event, how many holders run at once.
type inFlight struct {
	n     []atomic.Int32
	twins atomic.Int64
}

func (f *inFlight) enter(i int) {
	if f.n[i].Add(1) != 1 {
		f.twins.Add(1)
	}
}

func (f *inFlight) leave(i int) { f.n[i].Add(-1) }

// By default concurrent calls travel in shared pipelines, each still one
// script with its own answer; a lone call goes out on its own.
func TestCallsSharePipelines(t *testing.T) {
	t.Parallel()
	b := setupWith(t, redisstore.Options{})
	hook := &commandCounter{}
	b.client.AddHook(hook)
	scope := "coalesced"

	k := dedup.Key{Scope: scope, ID: "alone"}
	r := claimReq(time.Minute, time.Hour)
	_, err := b.store.Claim(b.ctx, k, r)
	require.NoError(t, err)
	hook.take()
	require.NoError(t, b.store.Complete(b.ctx, k, r.Token, time.Hour))
	// EVAL follows when the server's script cache lacks the script (the
	// first run of a changed script; TestSharedCallsSurviveScriptFlush
	// flushes it meanwhile).
	require.Contains(t, [][]string{{"evalsha"}, {"evalsha", "eval"}}, hook.take(), "a lone call is one command, not a pipeline")

	const workers, perWorker = 16, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				k := dedup.Key{Scope: scope, ID: fmt.Sprintf("w%d-e%d", w, i)}
				r := claimReq(time.Minute, time.Hour)
				res, err := b.store.Claim(b.ctx, k, r)
				if !assert.NoError(t, err) || !assert.Equal(t, dedup.StatusAcquired, res.Status) {
					return
				}
				// Another worker's token never completes this key.
				assert.ErrorIs(t, b.store.Complete(b.ctx, k, dedup.NewToken(), time.Hour), dedup.ErrLeaseLost)
				assert.NoError(t, b.store.Complete(b.ctx, k, r.Token, time.Hour))
				res, err = b.store.Claim(b.ctx, k, claimReq(time.Minute, time.Hour))
				assert.NoError(t, err)
				assert.Equal(t, dedup.StatusDone, res.Status)
			}
		})
	}
	wg.Wait()
	var piped, alone int
	for _, name := range hook.take() {
		switch name {
		case "pipeline:evalsha":
			piped++
		case "evalsha":
			alone++
		default:
			t.Errorf("unexpected command %q", name)
		}
	}
	require.Equal(t, workers*perWorker*4, piped+alone, "one script per call")
	require.Positive(t, piped, "concurrent calls shared pipelines")
	st := b.store.SharingStats()
	require.Equal(t, int64(workers*perWorker*4+2), st.Calls, "SharingStats counts every call")
	require.Greater(t, st.CallsPerRoundTrip(), 1.0, "SharingStats counts shared pipelines: %+v", st)
	t.Logf("%d calls: %d in pipelines, %d alone", piped+alone, piped, alone)
}

// A server whose script cache was flushed answers a pipeline's EVALSHAs with
// NOSCRIPT; each such call is sent again with its script, and succeeds.
func TestSharedCallsSurviveScriptFlush(t *testing.T) {
	t.Parallel()
	b := setupWith(t, redisstore.Options{})
	const workers, rounds = 8, 5
	for round := range rounds {
		require.NoError(t, b.client.ScriptFlush(b.ctx).Err())
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				k := dedup.Key{Scope: "flush", ID: fmt.Sprintf("r%d-w%d", round, w)}
				r := claimReq(time.Minute, time.Hour)
				res, err := b.store.Claim(b.ctx, k, r)
				if assert.NoError(t, err) && assert.Equal(t, dedup.StatusAcquired, res.Status) {
					assert.NoError(t, b.store.Complete(b.ctx, k, r.Token, time.Hour))
				}
			})
		}
		wg.Wait()
	}
}

// Without sharing, every call is a round trip of its own, however many
// goroutines call at once: SharingStats says one call per round trip.
func TestSharingStatsUnshared(t *testing.T) {
	t.Parallel()
	b := setupWith(t, redisstore.Options{DisableSharing: true})
	require.Zero(t, b.store.SharingStats().CallsPerRoundTrip(), "no call yet")
	const workers, perWorker = 16, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				k := dedup.Key{Scope: "unshared", ID: fmt.Sprintf("w%d-e%d", w, i)}
				r := claimReq(time.Minute, time.Hour)
				_, err := b.store.Claim(b.ctx, k, r)
				if assert.NoError(t, err) {
					assert.NoError(t, b.store.Complete(b.ctx, k, r.Token, time.Hour))
				}
			}
		})
	}
	wg.Wait()
	st := b.store.SharingStats()
	require.Equal(t, redisstore.SharingStats{RoundTrips: workers * perWorker * 2, Calls: workers * perWorker * 2}, st)
	require.InDelta(t, 1.0, st.CallsPerRoundTrip(), 0)
}
