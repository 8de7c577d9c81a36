package memstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/idempo/idempo/dedup"
)

// DefaultMaxKeys is the default bound on the number of records.
const DefaultMaxKeys = 1_000_000

// ErrFull is returned by Claim of a new key when the store holds MaxKeys
// live records: none has expired, and a live one is never evicted.
var ErrFull = errors.New("memstore: store is full (no expired record to evict)")

// Options configures a [Store]. A nil *Options means all defaults.
type Options struct {
	// MaxKeys bounds the number of records kept. When it is reached, expired
	// records are evicted first; if none has expired, Claim of a new key
	// fails with [ErrFull] (a live record is never evicted, since
	// that would let a duplicate through). Defaults to [DefaultMaxKeys].
	MaxKeys int
	// Now is the store's clock. Defaults to time.Now (whose monotonic reading
	// is used for every expiry). Tests may set a fake clock.
	Now func() time.Time
}

type state uint8

const (
	stateInProgress state = iota + 1
	stateReleased
	stateDueForDLQ
	stateDone
	stateDeadLettered
)

type record struct {
	state       state
	token       dedup.Token
	leaseUntil  time.Time
	expiresAt   time.Time
	deliveries  int
	fingerprint []byte
	failure     []byte
	replayID    string
	// heapGen identifies the record's one live heap entry, due at heapAt
	// (<= expiresAt). Later expiries do not push entries: the due entry is
	// pushed again at the record's current expiry when it pops.
	heapGen uint64
	heapAt  time.Time
}

// Store is an in-memory [dedup.Store] for one process: tests, demos and
// single-instance consumers that accept losing their records on restart.
// It is safe for concurrent use, starts no goroutine, and evicts expired
// records as it is used (amortised O(log n) per call).
type Store struct {
	mu      sync.Mutex
	records map[dedup.Key]*record
	expiry  expiryHeap
	maxKeys int
	now     func() time.Time
	gen     uint64 // last heap entry generation handed out
}

var _ dedup.Store = (*Store)(nil)

// New returns an empty store. opts may be nil.
func New(opts *Options) *Store {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Store{records: make(map[dedup.Key]*record), maxKeys: o.MaxKeys, now: o.Now}
}

// Len returns the number of records held, expired ones not yet evicted included.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.records)
}

func check(ctx context.Context, key dedup.Key) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: %w", err)
	}
	return key.Validate()
}

// Claim implements [dedup.Store.Claim].
func (s *Store) Claim(ctx context.Context, key dedup.Key, req dedup.ClaimRequest) (dedup.ClaimResult, error) {
	if err := check(ctx, key); err != nil {
		return dedup.ClaimResult{}, err
	}
	if err := req.Validate(); err != nil {
		return dedup.ClaimResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.evictExpired(now)

	r := s.records[key]
	if r != nil && !now.Before(r.expiresAt) {
		s.drop(key)
		r = nil
	}
	if r == nil {
		if len(s.records) >= s.maxKeys {
			return dedup.ClaimResult{}, fmt.Errorf("%w (%d records)", ErrFull, len(s.records))
		}
		r = &record{}
		s.records[key] = r
		s.acquire(key, r, req, now, true)
		return dedup.ClaimResult{Status: dedup.StatusAcquired, Deliveries: r.deliveries}, nil
	}

	res := dedup.ClaimResult{Fingerprint: bytes.Clone(r.fingerprint)}
	switch r.state {
	case stateDone:
		res.Status, res.Deliveries = dedup.StatusDone, r.deliveries
		return res, nil
	case stateDeadLettered:
		if req.ReplayID == "" || req.ReplayID == r.replayID {
			res.Status, res.Deliveries = dedup.StatusDeadLettered, r.deliveries
			return res, nil
		}
		r.deliveries = 0
	case stateInProgress:
		if r.token == req.Token {
			// A retried claim: renewed, not counted again.
			s.acquire(key, r, req, now, false)
			res.Status, res.Deliveries = dedup.StatusAcquired, r.deliveries
			return res, nil
		}
		if now.Before(r.leaseUntil) {
			res.Status, res.Deliveries = dedup.StatusInProgress, r.deliveries
			res.LeaseRemaining = r.leaseUntil.Sub(now)
			return res, nil
		}
	case stateDueForDLQ:
		res.DueForDLQ = bytes.Clone(r.failure)
	case stateReleased:
	}
	s.acquire(key, r, req, now, true)
	res.Status, res.Deliveries = dedup.StatusAcquired, r.deliveries
	return res, nil
}

// acquire gives r to req's claim, counting the delivery unless it is a
// retried claim. Every acquiring claim, a retried one included, stores its
// fingerprint if r has none and its replay ID if it carries one.
func (s *Store) acquire(key dedup.Key, r *record, req dedup.ClaimRequest, now time.Time, count bool) {
	if len(r.fingerprint) == 0 && len(req.Fingerprint) > 0 {
		r.fingerprint = bytes.Clone(req.Fingerprint)
	}
	if req.ReplayID != "" {
		r.replayID = req.ReplayID
	}
	r.state = stateInProgress
	r.token = req.Token
	r.leaseUntil = now.Add(req.Lease)
	r.failure = nil
	if count {
		r.deliveries++
	}
	s.setExpiry(key, r, maxTime(r.expiresAt, now.Add(req.Retention)))
}

// held returns the record if token holds it in progress. With
// alsoIn, the record is also returned when it is already in that state under
// token (idempotent repeats of Complete and MarkDeadLettered).
func (s *Store) held(key dedup.Key, token dedup.Token, alsoIn state) (*record, time.Time, error) {
	now := s.now()
	r := s.records[key]
	if r == nil || !now.Before(r.expiresAt) || r.token != token {
		return nil, now, fmt.Errorf("memstore: %s: %w", key, dedup.ErrLeaseLost)
	}
	if r.state != stateInProgress && (alsoIn == 0 || r.state != alsoIn) {
		return nil, now, fmt.Errorf("memstore: %s: %w", key, dedup.ErrLeaseLost)
	}
	return r, now, nil
}

// Extend implements [dedup.Store.Extend].
func (s *Store) Extend(ctx context.Context, key dedup.Key, token dedup.Token, lease time.Duration) error {
	if err := check(ctx, key); err != nil {
		return err
	}
	if lease <= 0 {
		return fmt.Errorf("%w: lease must be > 0, got %v", dedup.ErrInvalidRequest, lease)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, now, err := s.held(key, token, 0)
	if err != nil {
		return err
	}
	r.leaseUntil = now.Add(lease)
	if r.expiresAt.Before(r.leaseUntil) {
		s.setExpiry(key, r, r.leaseUntil)
	}
	return nil
}

// Complete implements [dedup.Store.Complete].
func (s *Store) Complete(ctx context.Context, key dedup.Key, token dedup.Token, retention time.Duration) error {
	return s.finish(ctx, key, token, retention, stateDone)
}

// MarkDeadLettered implements [dedup.Store.MarkDeadLettered].
func (s *Store) MarkDeadLettered(ctx context.Context, key dedup.Key, token dedup.Token, retention time.Duration) error {
	return s.finish(ctx, key, token, retention, stateDeadLettered)
}

func (s *Store) finish(ctx context.Context, key dedup.Key, token dedup.Token, retention time.Duration, to state) error {
	if err := check(ctx, key); err != nil {
		return err
	}
	if retention <= 0 {
		return fmt.Errorf("%w: retention must be > 0, got %v", dedup.ErrInvalidRequest, retention)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, now, err := s.held(key, token, to)
	if err != nil {
		return err
	}
	r.state = to
	r.failure = nil
	s.setExpiry(key, r, now.Add(retention))
	return nil
}

// Release implements [dedup.Store.Release].
func (s *Store) Release(ctx context.Context, key dedup.Key, token dedup.Token, keepCount bool) error {
	if err := check(ctx, key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, _, err := s.held(key, token, stateReleased)
	if err != nil {
		return err
	}
	if r.state == stateInProgress {
		r.state = stateReleased
		if !keepCount && r.deliveries > 0 {
			r.deliveries--
		}
	}
	return nil
}

// MarkDueForDLQ implements [dedup.Store.MarkDueForDLQ].
func (s *Store) MarkDueForDLQ(ctx context.Context, key dedup.Key, token dedup.Token, failure []byte) error {
	if err := check(ctx, key); err != nil {
		return err
	}
	if len(failure) > dedup.MaxFailureLen {
		return fmt.Errorf("%w: failure is %d bytes, more than %d", dedup.ErrInvalidRequest, len(failure), dedup.MaxFailureLen)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, _, err := s.held(key, token, stateDueForDLQ)
	if err != nil {
		return err
	}
	r.state = stateDueForDLQ
	r.failure = append([]byte{}, failure...)
	return nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// setExpiry records a new expiry for r. A heap entry is pushed only when
// the new expiry is earlier than the record's live entry (or it has none);
// a later expiry is picked up when that entry pops. So a claim followed by a
// completion costs one heap push, not two.
func (s *Store) setExpiry(key dedup.Key, r *record, at time.Time) {
	r.expiresAt = at
	if r.heapGen != 0 && !at.Before(r.heapAt) {
		return
	}
	s.gen++
	r.heapGen, r.heapAt = s.gen, at
	s.expiry.push(expiryEntry{at: at, key: key, gen: s.gen})
	if len(s.expiry) > 4*len(s.records)+64 {
		s.rebuildHeap()
	}
}

func (s *Store) drop(key dedup.Key) { delete(s.records, key) }

// evictExpired pops heap entries that are due: a record whose live entry it
// is and whose expiry has come is deleted; one whose expiry moved later gets
// its entry pushed again. Called with mu held.
func (s *Store) evictExpired(now time.Time) {
	for len(s.expiry) > 0 && !now.Before(s.expiry[0].at) {
		e := s.expiry.pop()
		r, ok := s.records[e.key]
		if !ok || r.heapGen != e.gen {
			continue // stale entry
		}
		if !now.Before(r.expiresAt) {
			delete(s.records, e.key)
			continue
		}
		s.gen++
		r.heapGen, r.heapAt = s.gen, r.expiresAt
		s.expiry.push(expiryEntry{at: r.expiresAt, key: e.key, gen: s.gen})
	}
}

func (s *Store) rebuildHeap() {
	h := make(expiryHeap, 0, len(s.records))
	for k, r := range s.records {
		s.gen++
		r.heapGen, r.heapAt = s.gen, r.expiresAt
		h = append(h, expiryEntry{at: r.expiresAt, key: k, gen: s.gen})
	}
	h.init()
	s.expiry = h
}

type expiryEntry struct {
	at  time.Time
	key dedup.Key
	gen uint64
}

// expiryHeap is a min-heap of expiry entries by time, typed so that a push
// does not box its entry into an interface (container/heap would allocate).
type expiryHeap []expiryEntry

func (h expiryHeap) less(i, j int) bool { return h[i].at.Before(h[j].at) }

func (h *expiryHeap) push(e expiryEntry) {
	*h = append(*h, e)
	h.up(len(*h) - 1)
}

// pop removes and returns the earliest entry; h must not be empty.
func (h *expiryHeap) pop() expiryEntry {
	old := *h
	n := len(old) - 1
	e := old[0]
	old[0] = old[n]
	old[n] = expiryEntry{}
	*h = old[:n]
	h.down(0)
	return e
}

func (h expiryHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h expiryHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (h expiryHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(r, l) {
			m = r
		}
		if !h.less(m, i) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
