package retry_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/idempo/idempo/retry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestScheduleWithoutJitterIsExponentialAndCapped(t *testing.T) {
	t.Parallel()
	p := retry.Policy{InitialInterval: 10 * time.Millisecond, Multiplier: 2, MaxInterval: 50 * time.Millisecond, Jitter: -1, MaxAttempts: 6, MaxElapsed: -1}
	s := p.NewSchedule(time.Now())
	var got []time.Duration
	for {
		d, ok := s.Next()
		if !ok {
			break
		}
		got = append(got, d)
	}
	require.Equal(t, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond}, got)
	require.Equal(t, 6, s.Attempts())
}

func TestJitterOnByDefaultAndBounded(t *testing.T) {
	t.Parallel()
	p := retry.Policy{InitialInterval: 100 * time.Millisecond, MaxAttempts: 2}
	seen := map[time.Duration]bool{}
	for range 200 {
		d, ok := p.NewSchedule(time.Now()).Next()
		require.True(t, ok)
		require.GreaterOrEqual(t, d, 50*time.Millisecond)
		require.LessOrEqual(t, d, 150*time.Millisecond)
		seen[d] = true
	}
	require.Greater(t, len(seen), 20, "waits must be spread by jitter")
}

func TestNoOverflowOver64Attempts(t *testing.T) {
	t.Parallel()
	p := retry.Policy{InitialInterval: time.Second, Multiplier: 10, MaxInterval: time.Hour, MaxAttempts: 65, MaxElapsed: -1}
	s := p.NewSchedule(time.Now())
	for i := range 64 {
		d, ok := s.Next()
		require.True(t, ok, "attempt %d", i+2)
		require.Positive(t, d)
		require.LessOrEqual(t, d, time.Hour*3/2)
	}
	_, ok := s.Next()
	require.False(t, ok)
	require.Positive(t, p.MaxTotalWait())
}

func TestMaxElapsedStops(t *testing.T) {
	t.Parallel()
	p := retry.Policy{MaxAttempts: 100, MaxElapsed: time.Millisecond}
	s := p.NewSchedule(time.Now().Add(-time.Second))
	_, ok := s.Next()
	require.False(t, ok)
}

func TestMaxAttemptsMinusOneDisablesRetries(t *testing.T) {
	t.Parallel()
	_, ok := retry.Policy{MaxAttempts: -1}.NewSchedule(time.Now()).Next()
	require.False(t, ok)
}

func TestValidateNamesTheField(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p    retry.Policy
		want string
	}{
		{retry.Policy{Multiplier: 0.5}, "Multiplier"},
		{retry.Policy{Jitter: 2}, "Jitter"},
		{retry.Policy{MaxAttempts: -5}, "MaxAttempts"},
		{retry.Policy{InitialInterval: time.Minute, MaxInterval: time.Second}, "MaxInterval"},
		{retry.Policy{MaxElapsed: -2}, "MaxElapsed"},
	} {
		err := tc.p.Validate()
		require.ErrorContains(t, err, tc.want)
	}
	require.NoError(t, retry.Policy{}.Validate())
}

func TestClassification(t *testing.T) {
	t.Parallel()
	base := errors.New("boom")
	require.False(t, retry.IsPermanent(base))
	require.True(t, retry.IsPermanent(retry.Permanent(base)))
	require.True(t, retry.IsPermanent(fmt.Errorf("wrapped: %w", retry.Permanent(base))))
	require.ErrorIs(t, retry.Permanent(base), base, "the mark is transparent to errors.Is")
	require.False(t, retry.IsPermanent(fmt.Errorf("x: %w", context.Canceled)),
		"a handler's own context.Canceled is an ordinary failure; only the middleware's context means cancellation")
	require.True(t, retry.IsPermanent(retry.Permanent(context.Canceled)), "the permanent mark holds for any error")
	require.False(t, retry.IsPermanent(context.DeadlineExceeded), "a handler's own timeout is retried")
	require.NoError(t, retry.Permanent(nil))
}

func ExamplePermanent() {
	handle := func(payload []byte) error {
		if len(payload) == 0 {
			return retry.Permanent(errors.New("empty payload can never succeed"))
		}
		return nil
	}
	err := handle(nil)
	fmt.Println(retry.IsPermanent(err), err)
	// Output: true empty payload can never succeed
}

// Waits never go negative, whatever MaxInterval is, and the window bound
// takes constant time.
func TestExtremePolicies(t *testing.T) {
	t.Parallel()
	s := retry.Policy{InitialInterval: time.Hour, MaxInterval: math.MaxInt64, Multiplier: 1000, MaxAttempts: 10, MaxElapsed: -1}.NewSchedule(time.Now())
	for {
		d, ok := s.Next()
		if !ok {
			break
		}
		require.GreaterOrEqual(t, d, time.Duration(0))
	}
	p := retry.Policy{InitialInterval: time.Millisecond, MaxInterval: time.Second, Multiplier: 1.0000001, MaxAttempts: math.MaxInt, MaxElapsed: -1}
	require.Equal(t, time.Duration(math.MaxInt64), p.MaxTotalWait(), "saturates instead of overflowing")
	p.MaxElapsed = time.Minute
	require.Less(t, p.MaxTotalWait(), time.Minute+2*time.Second)
}

func TestValidateErrorsMatch(t *testing.T) {
	t.Parallel()
	err := retry.Policy{Jitter: 2}.Validate()
	require.ErrorIs(t, err, retry.ErrInvalidPolicy)
	require.ErrorContains(t, err, "Jitter")
}
