package retry

import "errors"

// Classifier reports whether a handler error is permanent: a permanent
// error is dead-lettered at once with reason "permanent_error"; any other is
// retried in-process while the policy allows, then dead-lettered with reason
// "retries_exhausted". It must be safe for concurrent use and is never called
// with a nil error. The default is [IsPermanent]: errors marked with
// [Permanent] are permanent, and everything else is retried,
// context.Canceled and context.DeadlineExceeded included (a handler's own
// cancelled or timed-out call is an ordinary failure; the middleware
// separately treats its own per-message context being done as
// cancellation).
type Classifier func(err error) (permanent bool)

// permanentError marks an error as permanent.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as permanent: the message is dead-lettered without
// further attempts. It returns nil for a nil err. errors.Is and errors.As see
// through the mark.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err or any error it wraps was marked with [Permanent].
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}
