package kafka_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/kafka"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want []string
	}{
		{"kafka://localhost:9092", []string{"localhost:9092"}},
		{"kafka://a:1,b:2/", []string{"a:1", "b:2"}},
		{"kafka://broker", []string{"broker:9092"}},
		{"kafka://[::1]:9093", []string{"[::1]:9093"}},
		{"kafka://[::1]", []string{"[::1]:9092"}},
	}
	for _, tc := range good {
		cfg, err := kafka.ParseURL(tc.in)
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, cfg.Brokers, tc.in)
		require.NoError(t, cfg.Validate(), tc.in)
	}
	bad := map[string]string{
		"":                      "want kafka://",
		"localhost:9092":        "want kafka://",
		"amqp://localhost:5672": `scheme "amqp" is not kafka`,
		"kafka://":              "no broker address",
		"kafka://a:1,,b:2":      "empty broker address",
		"kafka://a:notaport":    "not a number",
		"kafka://a:0":           "not a number from 1 to 65535",
		"kafka://a:70000":       "not a number from 1 to 65535",
		"kafka://u:p@a:1":       "credentials",
		"kafka://a:1/topic":     "path",
		"kafka://a:1?group=g":   "query",
		"kafka://:9092":         "no host",
	}
	for in, want := range bad {
		_, err := kafka.ParseURL(in)
		require.ErrorIs(t, err, kafka.ErrInvalidURL, in)
		require.ErrorContains(t, err, want, in)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := kafka.Config{Brokers: []string{"localhost:9092"}}
	require.NoError(t, ok.Validate())

	cases := map[string]func(*kafka.Config){
		"Brokers is empty":             func(c *kafka.Config) { c.Brokers = nil },
		"not host:port":                func(c *kafka.Config) { c.Brokers = []string{"localhost"} },
		"Version":                      func(c *kafka.Config) { c.Version = "two" },
		"NackDelay cannot be":          func(c *kafka.Config) { c.NackDelay = -2 },
		"AutoCommitInterval cannot be": func(c *kafka.Config) { c.AutoCommitInterval = -time.Second },
		"RebalanceTimeout cannot be":   func(c *kafka.Config) { c.RebalanceTimeout = -time.Second },
	}
	for want, mutate := range cases {
		c := ok
		mutate(&c)
		err := c.Validate()
		require.ErrorIs(t, err, kafka.ErrInvalidConfig, want)
		require.ErrorContains(t, err, want)
	}

	c := ok
	c.NackDelay = -1
	require.NoError(t, c.Validate())
}

func TestConstructorsValidate(t *testing.T) {
	t.Parallel()
	_, err := kafka.NewSubscriber(kafka.Config{Brokers: []string{"localhost:9092"}}, nil)
	require.ErrorIs(t, err, kafka.ErrMissingConsumerGroup)
	require.ErrorIs(t, err, kafka.ErrInvalidConfig)

	_, err = kafka.NewPublisher(kafka.Config{}, nil)
	require.ErrorIs(t, err, kafka.ErrInvalidConfig)
}
