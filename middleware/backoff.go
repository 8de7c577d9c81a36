package middleware

import (
	"context"
	"fmt"
	"time"

	"github.com/idempo/idempo/retry"
)

// The one retry loop: handler attempts (attempts.go) step a
// [retry.Schedule] themselves because they settle between attempts; the
// store and publish calls that settle a delivery use retryDo.

// permanent reports whether p classifies err as permanent: p.Classify, or
// [retry.IsPermanent] when it is nil.
func permanent(p retry.Policy, err error) bool {
	if p.Classify == nil {
		return retry.IsPermanent(err)
	}
	return p.Classify(err)
}

// errorClass names err's class for a dead-letter copy's history.
func errorClass(p retry.Policy, err error) string {
	if permanent(p, err) {
		return "permanent"
	}
	return "retryable"
}

// sleep blocks for d or until ctx is done, whichever comes first, and
// returns ctx.Err() in the latter case.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryDo calls fn until it succeeds, returns a permanent error, or p allows
// no more attempts; it returns fn's last error (or ctx's, when ctx ends a
// wait).
func retryDo(ctx context.Context, p retry.Policy, fn func(ctx context.Context) error) error {
	start := time.Now()
	err := fn(ctx)
	if err == nil {
		return nil
	}
	s := p.NewSchedule(start)
	for !permanent(p, err) {
		d, ok := s.Next()
		if !ok {
			return err
		}
		if werr := sleep(ctx, d); werr != nil {
			return fmt.Errorf("gave up waiting after %d attempts (%w): %w", s.Attempts()-1, werr, err)
		}
		if err = fn(ctx); err == nil {
			return nil
		}
	}
	return err
}
