package redisstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/dedup"
)

// DefaultPrefix is the default [Options.Prefix].
const DefaultPrefix = "idempo:"

// startupTimeout bounds the round trips [New] makes.
const startupTimeout = 10 * time.Second

// EvictionCheck says what [New] does about the server's maxmemory-policy.
type EvictionCheck int

const (
	// EvictionCheckRefuse makes [New] fail with an [*EvictionPolicyError]
	// when a server's maxmemory-policy is not noeviction, and when the server
	// cannot be reached. If the server refuses CONFIG GET (managed services
	// often do), New logs a warning and goes on. The zero value and default.
	EvictionCheckRefuse EvictionCheck = iota
	// EvictionCheckWarn makes [New] log a warning instead of failing, for any
	// problem the check finds.
	EvictionCheckWarn
	// EvictionCheckOff skips the check: New makes no round trip.
	EvictionCheckOff
)

// String returns "refuse", "warn" or "off".
func (c EvictionCheck) String() string {
	switch c {
	case EvictionCheckRefuse:
		return "refuse"
	case EvictionCheckWarn:
		return "warn"
	case EvictionCheckOff:
		return "off"
	default:
		return fmt.Sprintf("EvictionCheck(%d)", int(c))
	}
}

// ErrEvictionPolicy is matched (with errors.Is) by every [*EvictionPolicyError].
var ErrEvictionPolicy = errors.New("redisstore: maxmemory-policy must be noeviction")

// EvictionPolicyError reports a server whose maxmemory-policy lets Redis evict
// dedup records. Every record has a TTL, so the volatile-* policies can evict
// live claims as readily as the allkeys-* ones; an evicted record lets a
// duplicate through.
type EvictionPolicyError struct {
	// Addr is the server's address when the client tells it, else "".
	Addr string
	// Policy is the maxmemory-policy the server reported.
	Policy string
}

func (e *EvictionPolicyError) Error() string {
	at := ""
	if e.Addr != "" {
		at = " at " + e.Addr
	}
	return fmt.Sprintf("redisstore: Redis%s runs with maxmemory-policy %q, which can evict dedup records and let duplicates through; "+
		"set it to noeviction (CONFIG SET maxmemory-policy noeviction, and maxmemory-policy noeviction in redis.conf) "+
		"or set Options.EvictionPolicyCheck to EvictionCheckWarn to start anyway", at, e.Policy)
}

// Is reports whether target is [ErrEvictionPolicy].
func (e *EvictionPolicyError) Is(target error) bool { return target == ErrEvictionPolicy }

// Options configures a [Store]. A nil *Options means all defaults.
type Options struct {
	// Prefix starts every key the store writes. It must not contain '{' or
	// '}', which would break the key's Redis Cluster hash tag. Defaults to
	// [DefaultPrefix] ("idempo:"); an empty string means the default.
	Prefix string

	// EvictionPolicyCheck says what [New] does when the server's
	// maxmemory-policy is not noeviction. Defaults to [EvictionCheckRefuse].
	// The check runs once, in New; the store never checks again.
	EvictionPolicyCheck EvictionCheck

	// Logger receives the warnings of the eviction policy check. Defaults to
	// [slog.Default]. The store logs nothing on the hot path.
	Logger *slog.Logger

	// DisableSharing sends every call in a round trip of its own. By
	// default the scripts of calls made at the same moment by concurrent
	// goroutines share round trips: those that arrive while a pipeline is on
	// the wire go out together in the next one. Each call is still one
	// script, atomic on its own, with its own reply; a call alone goes out
	// at once (no timer holds it back). Sharing pays under many concurrent
	// handlers (fewer system calls on the client and the server) and costs
	// nothing measurable without them.
	DisableSharing bool
}

// Store is a [dedup.Store] on Redis: a single node, Sentinel (failover) or
// Cluster, through any go-redis [redis.UniversalClient].
//
// Each record is one Redis string whose key carries a hash tag, and every
// method is one Lua script on that key (EVALSHA, with EVAL when the server
// does not have the script cached yet), so it is one atomic step judged on
// the server's clock. Claim and Complete are one round trip each.
//
// Unless [Options.DisableSharing], the scripts of concurrent calls share
// pipelines; each call is still one script and one atomic step.
//
// A Store is safe for concurrent use by many goroutines and processes; it
// holds no state besides its options and the queue of calls waiting for a
// pipeline, and starts no goroutine. Closing the client is the
// caller's business.
type Store struct {
	client redis.UniversalClient
	prefix string
	log    *slog.Logger
	co     *coalescer // nil with Options.DisableSharing
	// trips counts the round trips of script calls (see SharingStats).
	trips sharingCounters
}

var _ dedup.Store = (*Store)(nil)

// New returns a store on client. opts may be nil.
//
// Unless [Options.EvictionPolicyCheck] is [EvictionCheckOff], New asks every
// master for its maxmemory-policy (CONFIG GET, within 10 s) and, by default,
// fails with an [*EvictionPolicyError] when it is not noeviction, or with the
// client's error when Redis cannot be reached. The check runs here only: a
// later CONFIG SET, a restart with another configuration, or a master added
// to a cluster afterwards is not seen by the store. New does not load the scripts:
// the first call of each method on a server sends it with EVAL.
func New(client redis.UniversalClient, opts *Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("redisstore: nil client (pass a go-redis client, e.g. redis.NewClient or redis.NewUniversalClient)")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(o.Prefix, "{}") {
		return nil, fmt.Errorf("redisstore: Options.Prefix %q must not contain '{' or '}' (they would break the Redis Cluster hash tag)", o.Prefix)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch o.EvictionPolicyCheck {
	case EvictionCheckRefuse, EvictionCheckWarn, EvictionCheckOff:
	default:
		return nil, fmt.Errorf("redisstore: Options.EvictionPolicyCheck has unknown value %d", int(o.EvictionPolicyCheck))
	}
	s := &Store{client: client, prefix: o.Prefix, log: o.Logger}
	if !o.DisableSharing {
		s.co = &coalescer{client: client, trips: &s.trips}
	}
	if o.EvictionPolicyCheck != EvictionCheckOff {
		ctx, cancel := context.WithTimeout(context.Background(), startupTimeout)
		defer cancel()
		if err := s.checkEvictionPolicy(ctx, o.EvictionPolicyCheck == EvictionCheckWarn); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Store) checkEvictionPolicy(ctx context.Context, warnOnly bool) error {
	check := func(ctx context.Context, c redis.UniversalClient, addr string) error {
		err := checkOne(ctx, c, addr)
		var perr *EvictionPolicyError
		var rerr redis.Error
		switch {
		case err == nil:
			return nil
		case errors.As(err, &perr) && !warnOnly:
			return err
		case errors.As(err, &perr):
			s.log.WarnContext(ctx, "redisstore: maxmemory-policy is not noeviction; dedup records can be evicted and duplicates let through",
				slog.String("addr", addr), slog.String("policy", perr.Policy))
			return nil
		case errors.As(err, &rerr) || errors.Is(err, errConfigUnknown) || warnOnly:
			s.log.WarnContext(ctx, "redisstore: could not check maxmemory-policy; make sure it is noeviction or duplicates can get through",
				slog.String("addr", addr), slog.Any("error", err))
			return nil
		default:
			return fmt.Errorf("redisstore: check maxmemory-policy: %w", err)
		}
	}
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return check(ctx, c, c.Options().Addr)
		})
	}
	addr := ""
	if c, ok := s.client.(*redis.Client); ok {
		addr = c.Options().Addr
	}
	return check(ctx, s.client, addr)
}

var errConfigUnknown = errors.New("CONFIG GET maxmemory-policy returned no value")

func checkOne(ctx context.Context, c redis.UniversalClient, addr string) error {
	m, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		return err
	}
	policy, ok := m["maxmemory-policy"]
	if !ok {
		return errConfigUnknown
	}
	if policy != "noeviction" {
		return &EvictionPolicyError{Addr: addr, Policy: policy}
	}
	return nil
}

// RedisKey returns the Redis key that holds key's record: the prefix, then
// the unpadded base64url SHA-256 of [dedup.Key.Encode] inside braces (the
// Redis Cluster hash tag). Operators can inspect a record with
// EVAL "return {cmsgpack.unpack(redis.call('GET', KEYS[1]))}" 1 KEY. It makes no round trip and is safe for concurrent use.
func (s *Store) RedisKey(key dedup.Key) string {
	h := key.Hash()
	b := make([]byte, 0, len(s.prefix)+2+base64.RawURLEncoding.EncodedLen(len(h)))
	b = append(b, s.prefix...)
	b = append(b, '{')
	b = base64.RawURLEncoding.AppendEncode(b, h[:])
	b = append(b, '}')
	return string(b)
}

// millis rounds d up to whole milliseconds, the resolution of Redis expiry.
func millis(d time.Duration) int64 {
	ms := d.Milliseconds()
	if d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

func positive(field string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%w: %s must be > 0, got %v", dedup.ErrInvalidRequest, field, d)
	}
	return nil
}

// before validates key and ctx; it runs before every round trip.
func before(ctx context.Context, op string, key dedup.Key) error {
	if err := key.Validate(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redisstore: %s %s: %w", op, key, err)
	}
	return nil
}

// failed wraps an error of the client, with ctx's error when ctx ended.
// A socket timeout set from ctx's deadline (go-redis ContextTimeoutEnabled)
// can fire a moment before ctx reports it; it counts as the deadline.
func failed(ctx context.Context, op string, key dedup.Key, err error) error {
	cerr := ctx.Err()
	if dl, ok := ctx.Deadline(); ok && cerr == nil && !time.Now().Before(dl) {
		cerr = context.DeadlineExceeded
	}
	if cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("redisstore: %s %s: %w (%w)", op, key, cerr, err)
	}
	return fmt.Errorf("redisstore: %s %s: %w", op, key, err)
}

// Claim implements [dedup.Store.Claim] in one round trip (two the first time
// a server meets the script: EVALSHA, then EVAL). An acquiring claim never
// shortens the record's retention; it stretches it to req.Retention from now
// when less is left.
func (s *Store) Claim(ctx context.Context, key dedup.Key, req dedup.ClaimRequest) (dedup.ClaimResult, error) {
	const op = "claim"
	if err := before(ctx, op, key); err != nil {
		return dedup.ClaimResult{}, err
	}
	if err := req.Validate(); err != nil {
		return dedup.ClaimResult{}, err
	}
	reply, err := s.eval(ctx, claimScript, []string{s.RedisKey(key)},
		string(req.Token), millis(req.Lease), millis(req.Retention), req.Fingerprint, req.ReplayID)
	if err != nil {
		return dedup.ClaimResult{}, failed(ctx, op, key, err)
	}
	res, ok := parseClaim(reply)
	if !ok {
		return dedup.ClaimResult{}, fmt.Errorf("redisstore: %s %s: unexpected reply %v", op, key, reply)
	}
	return res, nil
}

// eval runs script, in a pipeline shared with concurrent calls unless
// sharing is disabled.
func (s *Store) eval(ctx context.Context, script *redis.Script, keys []string, args ...any) (any, error) {
	if s.co != nil {
		return s.co.run(ctx, script, keys, args...)
	}
	s.trips.add(1)
	return script.Run(ctx, s.client, keys, args...).Result()
}

// parseClaim reads the claim script's reply.
func parseClaim(v any) (dedup.ClaimResult, bool) {
	if n, ok := v.(int64); ok {
		// A new key acquired.
		return dedup.ClaimResult{Status: dedup.StatusAcquired, Deliveries: 1}, n == 1
	}
	reply, ok := v.([]any)
	if !ok || len(reply) != 5 {
		return dedup.ClaimResult{}, false
	}
	status, ok1 := reply[0].(int64)
	deliveries, ok2 := reply[1].(int64)
	remaining, ok3 := reply[4].(int64)
	if !ok1 || !ok2 || !ok3 || status < int64(dedup.StatusAcquired) || status > int64(dedup.StatusInProgress) {
		return dedup.ClaimResult{}, false
	}
	res := dedup.ClaimResult{
		Status:         dedup.Status(status),
		Deliveries:     int(deliveries),
		LeaseRemaining: time.Duration(remaining) * time.Millisecond,
	}
	if fp, ok := reply[2].(string); ok && fp != "" {
		res.Fingerprint = []byte(fp)
	}
	if note, ok := reply[3].(string); ok {
		res.DueForDLQ = []byte(note) // non-nil, even for an empty note
	}
	return res, true
}

// fenced runs a fenced script and maps its reply: 1 is success, a string
// names why the token does not hold the record.
func (s *Store) fenced(ctx context.Context, op string, key dedup.Key, script *redis.Script, args ...any) error {
	reply, err := s.eval(ctx, script, []string{s.RedisKey(key)}, args...)
	if err != nil {
		return failed(ctx, op, key, err)
	}
	switch v := reply.(type) {
	case int64:
		if v == 1 {
			return nil
		}
	case string:
		return fmt.Errorf("redisstore: %s %s: %w (record %s)", op, key, dedup.ErrLeaseLost, strings.ReplaceAll(v, "_", " "))
	}
	return fmt.Errorf("redisstore: %s %s: unexpected reply %v", op, key, reply)
}

// Extend implements [dedup.Store.Extend] in one round trip. If lease outlasts
// the record's retention, the retention is stretched to cover it.
func (s *Store) Extend(ctx context.Context, key dedup.Key, token dedup.Token, lease time.Duration) error {
	const op = "extend"
	if err := before(ctx, op, key); err != nil {
		return err
	}
	if err := positive("lease", lease); err != nil {
		return err
	}
	return s.fenced(ctx, op, key, extendScript, string(token), millis(lease))
}

// Complete implements [dedup.Store.Complete] in one round trip.
func (s *Store) Complete(ctx context.Context, key dedup.Key, token dedup.Token, retention time.Duration) error {
	const op = "complete"
	if err := before(ctx, op, key); err != nil {
		return err
	}
	if err := positive("retention", retention); err != nil {
		return err
	}
	return s.fenced(ctx, op, key, finishScript, string(token), millis(retention), "done")
}

// MarkDeadLettered implements [dedup.Store.MarkDeadLettered] in one round trip.
func (s *Store) MarkDeadLettered(ctx context.Context, key dedup.Key, token dedup.Token, retention time.Duration) error {
	const op = "mark dead-lettered"
	if err := before(ctx, op, key); err != nil {
		return err
	}
	if err := positive("retention", retention); err != nil {
		return err
	}
	return s.fenced(ctx, op, key, finishScript, string(token), millis(retention), "dead_lettered")
}

// Release implements [dedup.Store.Release] in one round trip. The record keeps
// its retention.
func (s *Store) Release(ctx context.Context, key dedup.Key, token dedup.Token, keepCount bool) error {
	const op = "release"
	if err := before(ctx, op, key); err != nil {
		return err
	}
	keep := "0"
	if keepCount {
		keep = "1"
	}
	return s.fenced(ctx, op, key, releaseScript, string(token), keep)
}

// MarkDueForDLQ implements [dedup.Store.MarkDueForDLQ] in one round trip. The
// record keeps its retention.
func (s *Store) MarkDueForDLQ(ctx context.Context, key dedup.Key, token dedup.Token, failure []byte) error {
	const op = "mark due for DLQ"
	if err := before(ctx, op, key); err != nil {
		return err
	}
	if len(failure) > dedup.MaxFailureLen {
		return fmt.Errorf("%w: failure is %d bytes, more than %d", dedup.ErrInvalidRequest, len(failure), dedup.MaxFailureLen)
	}
	return s.fenced(ctx, op, key, dueScript, string(token), failure)
}
