package middleware

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/retry"
)

// The layers below are the stack's retry and dead-letter behaviour on their
// own, for routers that compose middlewares by hand. Without a dedup store
// they cannot cap redeliveries or skip duplicates; prefer [New] unless you
// know why not. When combining them, DeadLetter must wrap Retry (add it
// first, so it is the outer one), or retries never happen — the trap of
// watermill#645.

// Retry returns a middleware that retries a handler in-process by p:
// exponential backoff with jitter, permanent errors and cancellation not
// retried, waits ending when the message's context is done. Panics are
// recovered and retried like errors (as a *[PanicError]). It returns the last
// error, so the router nacks. Safe for concurrent use.
func Retry(p retry.Policy) (message.HandlerMiddleware, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := msg.Context()
			start := time.Now()
			outs, _, err := call(h, msg)
			if err == nil {
				return outs, nil
			}
			s := p.NewSchedule(start)
			for p.Class(err) == retry.Retryable && ctx.Err() == nil {
				wait, ok := s.Next()
				if !ok {
					break
				}
				if werr := retry.Wait(ctx, wait); werr != nil {
					return nil, errors.Join(err, werr)
				}
				if outs, _, err = call(h, msg); err == nil {
					return outs, nil
				}
			}
			return nil, err
		}
	}, nil
}

// DeadLetter returns a middleware that publishes a message whose handler
// failed to the DLQ described by cfg and acks it once the publish succeeded
// (a failed publish is returned, so the router nacks). Cancellation (the
// message's context done) is passed through, never dead-lettered; a
// handler's own context.Canceled is a failure like any other. Safe for concurrent use.
func DeadLetter(cfg dlq.Config) (message.HandlerMiddleware, error) {
	r, err := dlq.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx := msg.Context()
			start := time.Now()
			outs, stack, err := call(h, msg)
			if err == nil {
				return outs, nil
			}
			if ctx.Err() != nil {
				return nil, err
			}
			f := dlq.Failure{
				Reason: dlq.ReasonRetriesExhausted, Error: err.Error(), ErrorClass: retry.DefaultClassifier(err).String(),
				Attempts: 1, FirstFailure: start, LastFailure: time.Now(),
			}
			if retry.IsPermanent(err) {
				f.Reason = dlq.ReasonPermanent
			}
			var pe *PanicError
			if errors.As(err, &pe) {
				f.ErrorClass, f.PanicStack = "panic", string(pe.Stack)
			} else if stack != nil {
				f.ErrorClass, f.PanicStack = "panic", string(stack)
			}
			info := dlq.Info{OriginalTopic: message.SubscribeTopicFromCtx(ctx), Handler: message.HandlerNameFromCtx(ctx), Failure: f}
			info.Scope = info.Handler
			if perr := r.Publish(context.WithoutCancel(ctx), msg, info); perr != nil {
				return nil, errors.Join(err, perr)
			}
			return nil, nil
		}
	}, nil
}
