package middleware

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/retry"
)

func TestSleepEndsOnCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- sleep(ctx, time.Hour) }()
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	require.NoError(t, sleep(context.Background(), time.Millisecond))
}

func TestRetryDo(t *testing.T) {
	t.Parallel()
	fast := retry.Policy{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, MaxAttempts: 4}
	calls := 0
	err := retryDo(context.Background(), fast, func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("transient")
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 3, calls)

	calls = 0
	err = retryDo(context.Background(), fast, func(context.Context) error { calls++; return retry.Permanent(errors.New("bad input")) })
	require.True(t, retry.IsPermanent(err))
	require.Equal(t, 1, calls)

	calls = 0
	err = retryDo(context.Background(), fast, func(context.Context) error { calls++; return errors.New("always") })
	require.EqualError(t, err, "always")
	require.Equal(t, 4, calls)
}

func TestClassifierDecides(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	require.False(t, permanent(retry.Policy{}, boom), "by default only marked errors are permanent")
	require.True(t, permanent(retry.Policy{}, retry.Permanent(boom)))
	p := retry.Policy{Classify: func(err error) bool { return errors.Is(err, boom) }}
	require.True(t, permanent(p, boom), "a classifier overrides the default")
	require.Equal(t, "permanent", errorClass(p, boom))
	require.Equal(t, "retryable", errorClass(p, errors.New("other")))
}
