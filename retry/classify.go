package retry

import "errors"

// Class is how an error is handled.
type Class int

const (
	// Retryable errors are retried in-process while the policy allows, then
	// dead-lettered with reason "retries_exhausted".
	Retryable Class = iota + 1
	// PermanentClass errors are dead-lettered at once with reason "permanent_error".
	PermanentClass
)

// String returns "retryable" or "permanent".
func (c Class) String() string {
	switch c {
	case Retryable:
		return "retryable"
	case PermanentClass:
		return "permanent"
	default:
		return "unknown"
	}
}

// Classifier decides the [Class] of a handler error. It must be safe for
// concurrent use. It is never called with a nil error.
type Classifier func(err error) Class

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

// DefaultClassifier is the classifier used when none is set: errors marked
// with [Permanent] are [PermanentClass], and everything else is [Retryable],
// context.Canceled and context.DeadlineExceeded included: a handler's own
// cancelled or timed-out call is an ordinary failure. The middleware
// separately treats its own per-message context being done as cancellation.
func DefaultClassifier(err error) Class {
	if IsPermanent(err) {
		return PermanentClass
	}
	return Retryable
}
