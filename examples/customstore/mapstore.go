package main

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/idempo/idempo/dedup"
)

type state int

const (
	inProgress state = iota + 1
	released
	dueForDLQ
	done
	deadLettered
)

type record struct {
	state       state
	token       dedup.Token
	leaseUntil  time.Time
	expires     time.Time
	deliveries  int
	fingerprint []byte
	failure     []byte
	replayID    string
}

// MapStore is a minimal dedup.Store on a map. It never evicts expired
// records from memory (they are only treated as absent); fine for an example.
type MapStore struct {
	mu sync.Mutex
	m  map[dedup.Key]*record
}

var _ dedup.Store = (*MapStore)(nil)

// NewMapStore returns an empty store.
func NewMapStore() *MapStore { return &MapStore{m: map[dedup.Key]*record{}} }

// Len counts live records.
func (s *MapStore) Len(context.Context) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.m {
		if time.Now().Before(r.expires) {
			n++
		}
	}
	return n
}

func (s *MapStore) precheck(ctx context.Context, k dedup.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return k.Validate()
}

// Claim implements dedup.Store.
func (s *MapStore) Claim(ctx context.Context, k dedup.Key, req dedup.ClaimRequest) (dedup.ClaimResult, error) {
	if err := s.precheck(ctx, k); err != nil {
		return dedup.ClaimResult{}, err
	}
	if err := req.Validate(); err != nil {
		return dedup.ClaimResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	r := s.m[k]
	if r == nil || !now.Before(r.expires) {
		r = &record{fingerprint: bytes.Clone(req.Fingerprint)}
		s.m[k] = r
	}
	res := dedup.ClaimResult{Fingerprint: bytes.Clone(r.fingerprint), Deliveries: r.deliveries}
	if r.state == 0 {
		res.Fingerprint = nil
	}
	retried := false
	switch r.state {
	case done:
		res.Status = dedup.StatusDone
		return res, nil
	case deadLettered:
		if req.ReplayID == "" || req.ReplayID == r.replayID {
			res.Status = dedup.StatusDeadLettered
			return res, nil
		}
		r.deliveries = 0
	case inProgress:
		if r.token == req.Token {
			retried = true // renewed below, not counted again
		} else if now.Before(r.leaseUntil) {
			res.Status, res.LeaseRemaining = dedup.StatusInProgress, r.leaseUntil.Sub(now)
			return res, nil
		}
	case dueForDLQ:
		res.DueForDLQ = bytes.Clone(r.failure)
	}
	// Every acquiring claim, a retried one included, stores its fingerprint
	// unless the record has one, and its replay ID if it carries one.
	if len(r.fingerprint) == 0 {
		r.fingerprint = bytes.Clone(req.Fingerprint)
	}
	if req.ReplayID != "" {
		r.replayID = req.ReplayID
	}
	r.state, r.token, r.failure = inProgress, req.Token, nil
	r.leaseUntil = now.Add(req.Lease)
	if e := now.Add(req.Retention); e.After(r.expires) {
		r.expires = e
	}
	if !retried {
		r.deliveries++
	}
	res.Status, res.Deliveries = dedup.StatusAcquired, r.deliveries
	return res, nil
}

// owned returns the record if token holds it in one of the given states.
func (s *MapStore) owned(k dedup.Key, t dedup.Token, states ...state) (*record, error) {
	r := s.m[k]
	if r == nil || !time.Now().Before(r.expires) || r.token != t {
		return nil, dedup.ErrLeaseLost
	}
	for _, st := range states {
		if r.state == st {
			return r, nil
		}
	}
	return nil, dedup.ErrLeaseLost
}

// Extend implements dedup.Store.
func (s *MapStore) Extend(ctx context.Context, k dedup.Key, t dedup.Token, lease time.Duration) error {
	if err := s.precheck(ctx, k); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.owned(k, t, inProgress)
	if err != nil {
		return err
	}
	r.leaseUntil = time.Now().Add(lease)
	if r.leaseUntil.After(r.expires) {
		r.expires = r.leaseUntil
	}
	return nil
}

func (s *MapStore) settle(ctx context.Context, k dedup.Key, t dedup.Token, retention time.Duration, to state) error {
	if err := s.precheck(ctx, k); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.owned(k, t, inProgress, to)
	if err != nil {
		return err
	}
	r.state, r.expires = to, time.Now().Add(retention)
	return nil
}

// Complete implements dedup.Store.
func (s *MapStore) Complete(ctx context.Context, k dedup.Key, t dedup.Token, retention time.Duration) error {
	return s.settle(ctx, k, t, retention, done)
}

// MarkDeadLettered implements dedup.Store.
func (s *MapStore) MarkDeadLettered(ctx context.Context, k dedup.Key, t dedup.Token, retention time.Duration) error {
	return s.settle(ctx, k, t, retention, deadLettered)
}

// Release implements dedup.Store.
func (s *MapStore) Release(ctx context.Context, k dedup.Key, t dedup.Token, keepCount bool) error {
	if err := s.precheck(ctx, k); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.owned(k, t, inProgress, released)
	if err != nil {
		return err
	}
	if r.state == inProgress {
		r.state = released
		if !keepCount {
			r.deliveries--
		}
	}
	return nil
}

// MarkDueForDLQ implements dedup.Store.
func (s *MapStore) MarkDueForDLQ(ctx context.Context, k dedup.Key, t dedup.Token, failure []byte) error {
	if err := s.precheck(ctx, k); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.owned(k, t, inProgress, dueForDLQ)
	if err != nil {
		return err
	}
	r.state, r.failure = dueForDLQ, bytes.Clone(failure)
	return nil
}
