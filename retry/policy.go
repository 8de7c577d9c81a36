package retry

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Defaults of [Policy].
const (
	defaultInitialInterval = 100 * time.Millisecond
	defaultMultiplier      = 2.0
	defaultMaxInterval     = 10 * time.Second
	defaultJitter          = 0.5
	defaultMaxAttempts     = 5
	defaultMaxElapsed      = time.Minute
)

// Policy configures in-process retries of one delivery. The zero value means
// all defaults. A Policy is a value; it is safe to share.
type Policy struct {
	// InitialInterval is the wait after the first failed attempt.
	// Defaults to 100ms.
	InitialInterval time.Duration
	// Multiplier grows the wait after each further failure. Defaults to 2.
	// Must be >= 1.
	Multiplier float64
	// MaxInterval caps a single wait (before jitter). Defaults to 10s.
	MaxInterval time.Duration
	// Jitter is the randomization factor: each wait is drawn uniformly from
	// [w·(1−Jitter), w·(1+Jitter)]. Defaults to 0.5. The special value -1
	// disables jitter. Must be in [0, 1] otherwise.
	Jitter float64
	// MaxAttempts is the number of attempts per delivery, the first included.
	// Defaults to 5. The special value 1 (or -1) disables retries.
	MaxAttempts int
	// MaxElapsed bounds the time from the first attempt after which no new
	// attempt starts. Defaults to 1 minute. The special value -1 removes the
	// bound (MaxAttempts still applies).
	MaxElapsed time.Duration
	// Classify decides which errors are permanent (not retried). Defaults to
	// [IsPermanent].
	Classify Classifier
}

// withDefaults returns p with every zero field set to its default.
func (p Policy) withDefaults() Policy {
	if p.InitialInterval == 0 {
		p.InitialInterval = defaultInitialInterval
	}
	if p.Multiplier == 0 {
		p.Multiplier = defaultMultiplier
	}
	if p.MaxInterval == 0 {
		p.MaxInterval = defaultMaxInterval
	}
	if p.Jitter == 0 {
		p.Jitter = defaultJitter
	}
	if p.MaxAttempts == 0 {
		p.MaxAttempts = defaultMaxAttempts
	}
	if p.MaxAttempts == -1 {
		p.MaxAttempts = 1
	}
	if p.MaxElapsed == 0 {
		p.MaxElapsed = defaultMaxElapsed
	}
	if p.Classify == nil {
		p.Classify = IsPermanent
	}
	return p
}

// ErrInvalidPolicy is matched by every error [Policy.Validate] returns.
var ErrInvalidPolicy = errors.New("retry: invalid policy")

// Validate reports the first invalid field of p, zero fields standing for
// their defaults (so the zero Policy is valid). Errors match
// [ErrInvalidPolicy].
func (p Policy) Validate() error {
	if err := p.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	return nil
}

func (p Policy) validate() error {
	p = p.withDefaults()
	switch {
	case p.InitialInterval < 0:
		return fmt.Errorf("retry: InitialInterval must not be negative, got %v", p.InitialInterval)
	case p.Multiplier < 1 || math.IsNaN(p.Multiplier) || math.IsInf(p.Multiplier, 0):
		return fmt.Errorf("retry: Multiplier must be >= 1, got %v", p.Multiplier)
	case p.MaxInterval < p.InitialInterval:
		return fmt.Errorf("retry: MaxInterval (%v) must be >= InitialInterval (%v)", p.MaxInterval, p.InitialInterval)
	case p.Jitter != -1 && (p.Jitter < 0 || p.Jitter > 1 || math.IsNaN(p.Jitter)):
		return fmt.Errorf("retry: Jitter must be in [0, 1] or -1 to disable, got %v", p.Jitter)
	case p.MaxAttempts < 1:
		return fmt.Errorf("retry: MaxAttempts must be >= 1 (or -1 to disable retries), got %d", p.MaxAttempts)
	case p.MaxElapsed < -1:
		return fmt.Errorf("retry: MaxElapsed must be > 0 or -1 for no bound, got %v", p.MaxElapsed)
	}
	return nil
}

func (p Policy) jitter() float64 {
	if p.Jitter == -1 {
		return 0
	}
	return p.Jitter
}

// MaxTotalWait is an upper bound on the sum of waits one delivery can spend
// between its attempts (jitter included). The middleware checks that the
// dedup retention covers it.
//
// It takes constant time whatever MaxAttempts is, and saturates at the
// largest time.Duration instead of overflowing.
func (p Policy) MaxTotalWait() time.Duration {
	p = p.withDefaults()
	j := 1 + p.jitter()
	capped := float64(p.MaxInterval) * j // the longest single wait
	var total float64
	w := float64(p.InitialInterval)
	for i := 1; i < p.MaxAttempts; i++ {
		if w >= float64(p.MaxInterval) || i > 1000 {
			// Every remaining wait is at most the capped one (past 1,000
			// growing waits this overestimates, which a bound may).
			total += float64(p.MaxAttempts-i) * capped
			break
		}
		total += w * j
		w *= p.Multiplier
	}
	if p.MaxElapsed > 0 {
		// No attempt starts after MaxElapsed; the last wait may start just
		// before it runs out.
		total = math.Min(total, float64(p.MaxElapsed)+capped)
	}
	return saturate(total)
}

// saturate converts nanoseconds to a Duration, saturating at the largest one.
func saturate(ns float64) time.Duration {
	if ns >= math.MaxInt64 || math.IsNaN(ns) {
		return math.MaxInt64
	}
	return time.Duration(ns)
}

// Schedule is the retry schedule of one delivery. It is not safe for
// concurrent use. Create one with [Policy.NewSchedule] only after the first
// failure, so the success path allocates nothing.
type Schedule struct {
	b           *backoff.ExponentialBackOff
	maxAttempts int
	attempts    int
	start       time.Time
	maxElapsed  time.Duration
	maxWait     time.Duration // MaxInterval with jitter, saturated
}

// NewSchedule starts a schedule whose first attempt began at start and has
// failed (so one attempt is counted).
func (p Policy) NewSchedule(start time.Time) *Schedule {
	p = p.withDefaults()
	maxWait := saturate(float64(p.MaxInterval) * (1 + p.jitter()))
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.InitialInterval),
		backoff.WithMultiplier(p.Multiplier),
		backoff.WithMaxInterval(p.MaxInterval),
		backoff.WithRandomizationFactor(p.jitter()),
		backoff.WithMaxElapsedTime(0),
	)
	return &Schedule{b: b, maxAttempts: p.MaxAttempts, attempts: 1, start: start, maxElapsed: p.MaxElapsed, maxWait: maxWait}
}

// Attempts returns the number of attempts counted so far.
func (s *Schedule) Attempts() int { return s.attempts }

// Next returns the wait before the next attempt and counts that attempt, or
// false when the policy allows no more attempts.
func (s *Schedule) Next() (time.Duration, bool) {
	if s.attempts >= s.maxAttempts {
		return 0, false
	}
	if s.maxElapsed > 0 && time.Since(s.start) >= s.maxElapsed {
		return 0, false
	}
	s.attempts++
	d := s.b.NextBackOff()
	if d < 0 || d > s.maxWait {
		// The backoff library's float maths overflows past ~292 years.
		d = s.maxWait
	}
	return d, true
}
