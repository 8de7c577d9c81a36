package memstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/dlq/resolution/internal/check"
)

// Options configures a [Store]. A nil *Options means all defaults.
type Options struct {
	// Now is the store's clock. Defaults to time.Now.
	Now func() time.Time
}

type record struct {
	resolution.Record
	token string
}

// Store is a [resolution.Store] in memory. It is safe for concurrent use;
// every method holds one mutex for a map operation.
type Store struct {
	now func() time.Time
	mu  sync.Mutex
	// dlqs maps a DLQ to its records by entry ID.
	dlqs map[string]map[string]*record
}

var _ resolution.Store = (*Store)(nil)

// New returns an empty store.
func New(opts *Options) *Store {
	s := &Store{now: time.Now, dlqs: map[string]map[string]*record{}}
	if opts != nil && opts.Now != nil {
		s.now = opts.Now
	}
	return s
}

func (s *Store) get(k resolution.Key) *record { return s.dlqs[k.DLQ][k.EntryID] }

// live reports whether r is resolved or held with a running lease.
func live(r *record, now time.Time) bool {
	return r != nil && (r.Status == resolution.Resolved || now.Before(r.LeaseUntil))
}

// Begin implements [resolution.Store.Begin].
func (s *Store) Begin(ctx context.Context, k resolution.Key, by string, lease time.Duration) (resolution.Begun, error) {
	if err := check.Begin(k, by, lease); err != nil {
		return resolution.Begun{}, err
	}
	if err := ctx.Err(); err != nil {
		return resolution.Begun{}, fmt.Errorf("memstore: begin %s/%s: %w", k.DLQ, k.EntryID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if r := s.get(k); live(r, now) {
		return resolution.Begun{Status: r.Status, Record: r.Record}, nil
	}
	r := &record{token: check.NewToken(), Record: resolution.Record{Status: resolution.InProgress, By: by, At: now, LeaseUntil: now.Add(lease)}}
	if s.dlqs[k.DLQ] == nil {
		s.dlqs[k.DLQ] = map[string]*record{}
	}
	s.dlqs[k.DLQ][k.EntryID] = r
	return resolution.Begun{Status: resolution.Acquired, Token: r.token, Record: r.Record}, nil
}

// Finish implements [resolution.Store.Finish].
func (s *Store) Finish(ctx context.Context, k resolution.Key, token string, outcome resolution.Outcome) (resolution.Record, error) {
	if err := check.Finish(k, token, outcome); err != nil {
		return resolution.Record{}, err
	}
	if err := ctx.Err(); err != nil {
		return resolution.Record{}, fmt.Errorf("memstore: finish %s/%s: %w", k.DLQ, k.EntryID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.get(k)
	switch {
	case r == nil || r.token != token:
		return resolution.Record{}, fmt.Errorf("%w: %s/%s", resolution.ErrLeaseLost, k.DLQ, k.EntryID)
	case r.Status == resolution.Resolved:
		return r.Record, nil
	}
	r.Record = resolution.Record{Status: resolution.Resolved, Outcome: outcome, By: r.By, At: s.now()}
	return r.Record, nil
}

// Abort implements [resolution.Store.Abort].
func (s *Store) Abort(ctx context.Context, k resolution.Key, token string) error {
	if err := check.Token(k, token); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: abort %s/%s: %w", k.DLQ, k.EntryID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.get(k); r != nil && r.token == token && r.Status == resolution.InProgress {
		delete(s.dlqs[k.DLQ], k.EntryID)
	}
	return nil
}

// Resolutions implements [resolution.Store.Resolutions].
func (s *Store) Resolutions(ctx context.Context, dlq string) (map[string]resolution.Record, error) {
	if err := check.DLQ(dlq); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memstore: resolutions of %s: %w", dlq, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make(map[string]resolution.Record, len(s.dlqs[dlq]))
	for id, r := range s.dlqs[dlq] {
		if live(r, now) {
			out[id] = r.Record
		}
	}
	return out, nil
}
