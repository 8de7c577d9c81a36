package middleware

import "time"

// clock is the keeper's view of time: the real clock in production, a
// manual one in tests of the keeper's scheduling.
type clock interface {
	Now() time.Time
	NewTimer(d time.Duration) clockTimer
}

// clockTimer is the part of *time.Timer the keeper uses.
type clockTimer interface {
	C() <-chan time.Time
	// Reset makes the timer fire d from now, discarding any value not yet
	// received (time.Timer's behaviour since Go 1.23).
	Reset(d time.Duration)
	Stop()
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) clockTimer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time   { return r.t.C }
func (r realTimer) Reset(d time.Duration) { r.t.Reset(d) }
func (r realTimer) Stop()                 { r.t.Stop() }
