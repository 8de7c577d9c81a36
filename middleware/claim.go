package middleware

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/internal/progress"
)

// claim reserves the delivery's key (row "claim"): through the key's local
// gate (twins in this process wait for each other), then the store, with a
// lease counted from start, taken before the claim is sent. It returns the
// lease when the claim is acquired; otherwise the delivery is settled —
// a duplicate (rows "done", "dead-lettered earlier"), in progress elsewhere,
// an ID collision or a store failure — and err is the router's result.
func (s *Stack) claim(d *delivery) (l *lease, start time.Time, err error) {
	var fp []byte
	if s.cfg.Fingerprint {
		fp = dedup.Fingerprint(d.msg)
	}
	for {
		l = &d.gate
		*l = lease{key: d.key, token: s.keeper.newToken(), handler: d.handler, topic: d.topic, touch: progress.From(d.ctx)}
		if wait := s.keeper.enter(l); wait != nil {
			if err := s.waitTwin(d, wait); err != nil {
				return nil, start, err
			}
			continue
		}
		start = s.keeper.clk.Now()
		res, err := s.cfg.Store.Claim(d.ctx, d.key, dedup.ClaimRequest{
			Token:       l.token,
			Lease:       s.cfg.Lease,
			Retention:   s.cfg.Retention,
			Fingerprint: fp,
			ReplayID:    d.msg.Metadata.Get(dlqmeta.KeyReplayID),
		})
		s.observeStore(d.ctx, d.handler, d.topic, opClaim, start, err)
		if err != nil || res.Status != dedup.StatusAcquired {
			s.keeper.unregister(l)
		}
		if err != nil {
			return nil, start, s.claimFailed(d, err)
		}
		d.res = res
		if fp != nil && len(res.Fingerprint) > 0 && !bytes.Equal(fp, res.Fingerprint) {
			return nil, start, s.collision(d, l)
		}
		switch res.Status {
		case dedup.StatusAcquired:
			return l, start, nil
		case dedup.StatusDone, dedup.StatusDeadLettered:
			return nil, start, s.finish(d, OutcomeDuplicate, nil)
		case dedup.StatusInProgress:
			return nil, start, s.finish(d, OutcomeInProgress, ErrInProgressElsewhere)
		default:
			return nil, start, s.nack(d, fmt.Errorf("%w: claim returned unknown status %v", ErrStore, res.Status))
		}
	}
}

// waitTwin waits for the twin in this process that holds the key's gate.
func (s *Stack) waitTwin(d *delivery, wait <-chan struct{}) error {
	select {
	case <-wait:
		return nil
	case <-d.ctx.Done():
		return s.nack(d, fmt.Errorf("%w: %w", ErrCancelled, d.ctx.Err()))
	}
}

func (s *Stack) claimFailed(d *delivery, err error) error {
	if d.ctx.Err() != nil {
		return s.nack(d, fmt.Errorf("%w: %w", ErrCancelled, err))
	}
	if errors.Is(err, dedup.ErrInvalidRequest) || errors.Is(err, dedup.ErrInvalidKey) {
		// The store refuses the request itself: every redelivery would be
		// refused alike, so it is no outage to wait out.
		return s.deadLetterUnclaimed(d, dlq.Failure{Reason: dlq.ReasonMalformed, Error: "the dedup store refused the claim: " + err.Error()})
	}
	s.cfg.Logger.Warn("idempo: dedup store claim failed; nacking", "scope", d.scope, "event_id", d.eventID, "error", err)
	return s.nack(d, fmt.Errorf("%w: claim: %w", ErrStore, err))
}

// collision dead-letters a payload whose event ID was seen with another one.
func (s *Stack) collision(d *delivery, l *lease) error {
	if d.res.Status == dedup.StatusAcquired {
		// The record belongs to the first payload: give it back untouched.
		s.release(d, l, false)
		s.keeper.unregister(l)
	}
	return s.deadLetterUnclaimed(d, dlq.Failure{
		Reason: dlq.ReasonIDCollision,
		Error:  "event ID " + strconv.Quote(d.eventID) + " was seen before with another payload",
	})
}
