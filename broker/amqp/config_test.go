package amqp_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/amqp"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, good := range []string{
		"amqp://guest:guest@127.0.0.1:5672/",
		"amqp://localhost",
		"amqps://user:secret@rabbit.example.com:5671/prod",
		"amqp://u:p@h:5672/%2F",
	} {
		cfg, err := amqp.ParseURL(good)
		require.NoError(t, err, good)
		require.Equal(t, good, cfg.URL)
		require.NoError(t, cfg.Validate(), good)
	}
	bad := map[string]string{
		"":                            "want amqp://",
		"localhost:5672":              "",
		"kafka://h:9092":              `scheme "kafka" is not amqp`,
		"amqp://":                     "no host",
		"amqp://u:secret@h:notaport/": "",
		"amqp://u:secret@h:5672/a/b":  "one vhost name",
		"amqp://u:secret@h:5672/?x=1": "query",
	}
	for in, want := range bad {
		_, err := amqp.ParseURL(in)
		require.ErrorIs(t, err, amqp.ErrInvalidConfig, in)
		require.ErrorContains(t, err, want, in)
		require.NotContains(t, err.Error(), "secret", "errors must not show the password")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := amqp.Config{URL: "amqp://guest:guest@localhost:5672/"}
	require.NoError(t, ok.Validate())
	cases := map[string]func(*amqp.Config){
		"URL is empty":              func(c *amqp.Config) { c.URL = "" },
		"URL: amqp: invalid URL":    func(c *amqp.Config) { c.URL = "http://x" },
		"Prefetch cannot be":        func(c *amqp.Config) { c.Prefetch = -1 },
		"largest prefetch count":    func(c *amqp.Config) { c.Prefetch = 65536 },
		"Consumers cannot be":       func(c *amqp.Config) { c.Consumers = -1 },
		"ChannelPoolSize cannot be": func(c *amqp.Config) { c.ChannelPoolSize = -1 },
		"ConfirmTimeout cannot be":  func(c *amqp.Config) { c.ConfirmTimeout = -time.Second },
		"NackDelay cannot be":       func(c *amqp.Config) { c.NackDelay = -2 },
		"ConsumerTimeout cannot be": func(c *amqp.Config) { c.ConsumerTimeout = -2 },
		"MaxHandling cannot be":     func(c *amqp.Config) { c.MaxHandling = -time.Second },
	}
	for want, mutate := range cases {
		c := ok
		mutate(&c)
		err := c.Validate()
		require.ErrorIs(t, err, amqp.ErrInvalidConfig, want)
		require.ErrorContains(t, err, want)
	}
	c := ok
	c.NackDelay = -1
	require.NoError(t, c.Validate())

	_, err := amqp.NewPublisher(amqp.Config{}, nil)
	require.ErrorIs(t, err, amqp.ErrInvalidConfig)
	_, err = amqp.NewSubscriber(amqp.Config{}, nil)
	require.ErrorIs(t, err, amqp.ErrInvalidConfig)
}

// A subscriber whose last prefetched delivery could wait past RabbitMQ's
// consumer_timeout is refused at start, the error naming both figures; the
// defaults fit, and -1 (no broker timeout) disables the check.
func TestSubscriberRefusesPrefetchBeyondConsumerTimeout(t *testing.T) {
	t.Parallel()
	base := amqp.Config{URL: brokerURL()}
	for _, c := range []amqp.Config{
		{Prefetch: 1000}, // 1000 × (1m + 1s)
		{Prefetch: 16, MaxHandling: 2 * time.Minute}, // 16 × 2m1s
		{Prefetch: 2, MaxHandling: time.Minute, NackDelay: time.Minute, ConsumerTimeout: 3 * time.Minute},
		{Prefetch: math.MaxUint16, MaxHandling: math.MaxInt64}, // saturates, no overflow
	} {
		c.URL = base.URL
		sub, err := amqp.NewSubscriber(c, nil)
		if err == nil {
			_ = sub.Close()
		}
		require.ErrorIs(t, err, amqp.ErrInvalidConfig, "%+v", c)
		require.ErrorContains(t, err, "ConsumerTimeout")
		require.ErrorContains(t, err, "Prefetch")
		require.NoError(t, c.Validate(), "publishers share the Config and do not prefetch")
	}
	for _, c := range []amqp.Config{
		{},                                    // 16 × (1m + 1s) < 30m
		{Prefetch: 1000, ConsumerTimeout: -1}, // the broker has none
		{Prefetch: 29, NackDelay: -1},         // 29 × 1m < 30m
		{Prefetch: 4, MaxHandling: time.Minute, ConsumerTimeout: 5 * time.Minute},
	} {
		c.URL = base.URL
		sub, err := amqp.NewSubscriber(c, nil)
		require.NoError(t, err, "%+v", c)
		require.NoError(t, sub.Close())
	}
}
