package kafka_test

import (
	"math"
	"strings"
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
		"":                            "want kafka://",
		"localhost:9092":              "want kafka://",
		"amqp://localhost:5672":       `scheme "amqp" is not kafka`,
		"kafka://":                    "no broker address",
		"kafka://a:1,,b:2":            "empty broker address",
		"kafka://a:notaport":          "not a number",
		"kafka://a:0":                 "not a number from 1 to 65535",
		"kafka://a:70000":             "not a number from 1 to 65535",
		"kafka://a:1/topic":           "path",
		"kafka://a:1?group=g":         `query parameter "group"`,
		"kafka://a:1#f":               "fragments",
		"kafka://a:1?sasl=PLAIN":      "needs user info",
		"kafka://u:p@a:1?sasl=GSSAPI": `Mechanism "GSSAPI"`,
		"kafka://:p@a:1":              "user info",
		"kafka://u:%zz@a:1":           "user info",
		"kafka://a:1?tls=maybe":       "tls=",
		"kafka://:9092":               "no host",
	}
	for in, want := range bad {
		_, err := kafka.ParseURL(in)
		require.ErrorIs(t, err, kafka.ErrInvalidConfig, in)
		require.ErrorContains(t, err, want, in)
	}
}

// Credentials in the URL set SASL for every connection; the password is
// percent-decoded and never shown in an error.
func TestParseURLCredentials(t *testing.T) {
	t.Parallel()
	cfg, err := kafka.ParseURL("kafka://alice:s%40cr%3At@a:1,b?sasl=scram-sha-512&tls=true")
	require.NoError(t, err)
	require.Equal(t, []string{"a:1", "b:9092"}, cfg.Brokers)
	require.Equal(t, &kafka.SASL{Mechanism: "scram-sha-512", User: "alice", Password: "s@cr:t"}, cfg.SASL)
	require.NotNil(t, cfg.TLS)
	require.NoError(t, cfg.Validate())
	require.Equal(t, "SCRAM-SHA-512 as alice", cfg.SASL.String())

	cfg, err = kafka.ParseURL("kafka://bob:pw@a:1")
	require.NoError(t, err)
	require.Equal(t, "PLAIN as bob", cfg.SASL.String())
	require.Nil(t, cfg.TLS)

	for _, in := range []string{"kafka://u:TOPSECRET@a:notaport", "kafka://u:TOPSECRET@a:1/path", "kafka://u:TOPSECRET@a:1?sasl=nope", "kafka://u:TOPSECRET@"} {
		_, err := kafka.ParseURL(in)
		require.Error(t, err, in)
		require.NotContains(t, err.Error(), "TOPSECRET", in)
	}
}

// FuzzParseURL: any input parses or fails cleanly, and an error never
// carries the password of the input's user info.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"kafka://a:1", "kafka://u:p@a:1,b?sasl=PLAIN&tls=true", "kafka://[::1]", "kafka://u:%41@h", "kafka://a:1?x=%zz"} {
		f.Add(s, "secretpw")
	}
	f.Fuzz(func(t *testing.T, in, password string) {
		if len(password) < 6 || strings.ContainsAny(password, "@/?#:%") {
			return
		}
		rest, ok := strings.CutPrefix(in, "kafka://")
		if !ok || strings.Contains(rest, password) {
			return
		}
		cfg, err := kafka.ParseURL("kafka://u:" + password + "@" + rest)
		if err != nil {
			require.ErrorIs(t, err, kafka.ErrInvalidConfig)
			require.NotContains(t, err.Error(), password)
			return
		}
		require.NotEmpty(t, cfg.Brokers)
	})
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
		"Ordering 7 is not":            func(c *kafka.Config) { c.Ordering = 7 },
		"MaxInFlight cannot be":        func(c *kafka.Config) { c.MaxInFlight = -1 },
		"MaxInFlight 65537 is more":    func(c *kafka.Config) { c.MaxInFlight = 65537 },
		"is more than 65536":           func(c *kafka.Config) { c.MaxInFlight = math.MaxInt },
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
	c.MaxInFlight = 65536
	require.NoError(t, c.Validate(), "the largest MaxInFlight")
	for o, want := range map[kafka.Ordering]string{kafka.PartitionOrder: "partition", kafka.KeyOrder: "key", kafka.Unordered: "unordered", 7: "Ordering(7)"} {
		require.Equal(t, want, o.String())
	}
}

func TestConstructorsValidate(t *testing.T) {
	t.Parallel()
	_, err := kafka.NewSubscriber(kafka.Config{Brokers: []string{"localhost:9092"}}, nil)
	require.ErrorIs(t, err, kafka.ErrInvalidConfig)
	require.ErrorIs(t, err, kafka.ErrInvalidConfig)

	_, err = kafka.NewPublisher(kafka.Config{}, nil)
	require.ErrorIs(t, err, kafka.ErrInvalidConfig)
}
