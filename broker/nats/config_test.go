package nats

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseURLForms(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{
		"nats://127.0.0.1:4222", "nats://localhost", "nats://user:pass@host:4222", "nats://s3cr3tT0ken@host",
		"tls://host:4443", "nats://a:4222,nats://b:4222", "nats://[::1]:4222",
	} {
		cfg, err := ParseURL(ok)
		require.NoError(t, err, ok)
		require.Equal(t, ok, cfg.URL)
	}
	for in, want := range map[string]string{
		"":                            "empty",
		"127.0.0.1:4222":              "URL",
		"amqp://h":                    `scheme "amqp"`,
		"nats://":                     "no host",
		"nats://h:port":               "not a URL",
		"nats://h/x":                  "paths",
		"nats://h?token=SECRETTOKEN":  "query",
		"nats://u:SECRETPASS@/x":      "no host",
		"nats://SECRETTOKEN@h:12ab/":  "not a URL",
		"nats://h,ftp://SECRETTOKEN@": "scheme",
	} {
		_, err := ParseURL(in)
		require.Error(t, err, in)
		require.ErrorIs(t, err, ErrInvalidConfig, in)
		require.Contains(t, err.Error(), want, in)
		require.NotContains(t, err.Error(), "SECRET", in)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"nats://user:pass@host:4222":      "nats://user:xxxxx@host:4222",
		"nats://token@host":               "nats://xxxxx@host",
		"tls://u:p@h:1,nats://tok@h2:2":   "tls://u:xxxxx@h:1,nats://xxxxx@h2:2",
		"nats://host:4222":                "nats://host:4222",
		"nats://u:p%40ss@h":               "nats://u:xxxxx@h",
		"nats://we@ird:pa@ss@h:4222/path": "nats://we@ird:xxxxx@h:4222/path",
		// A password or token with a raw '/', '?' or '#' (not
		// percent-encoded): still all of it is hidden.
		"nats://user:SE/CRET@h:4222":  "nats://user:xxxxx@h:4222",
		"nats://user:SE#CRET@h:4222":  "nats://user:xxxxx@h:4222",
		"nats://user:SE?CRET@h:4222":  "nats://user:xxxxx@h:4222",
		"nats://SE/CRET@h:4222":       "nats://xxxxx@h:4222",
		"nats://h:4222?token=SECRET":  "nats://h:4222?xxxxx",
		"nats://u:SE/CRET@h,nats://h": "nats://u:xxxxx@h,nats://h",
	} {
		require.Equal(t, want, Redact(in), in)
		require.NotContains(t, Redact(in), "CRET", in)
	}
	for _, in := range []string{"nats://user:SE/CRET@h:4222", "nats://user:SE#CRET@h:4222", "nats://SE?CRET@h"} {
		_, err := ParseURL(in)
		require.ErrorIs(t, err, ErrInvalidConfig, in)
		require.NotContains(t, err.Error(), "CRET", in)
	}
}

// FuzzParseURL: ParseURL never panics and its errors never show the
// password or token of the URL it was given.
func FuzzParseURL(f *testing.F) {
	for _, s := range [][2]string{{"SECRET", "127.0.0.1:4222"}, {"p@ss", "h"}, {"tok:en", "[::1]:1"}, {"%zz", "h/x?y"}, {"", ""}} {
		f.Add(s[0], s[1])
	}
	// Text every error may show besides the host: a secret inside it
	// cannot be told apart.
	const shownParts = "nats://u:xxxxxtls@h"
	f.Fuzz(func(t *testing.T, secret, host string) {
		for _, s := range []string{"nats://u:" + secret + "@" + host, "nats://" + secret + "@" + host, "tls://" + secret + "@" + host + ",nats://h", secret + host} {
			_, err := ParseURL(s)
			if err == nil {
				continue
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("ParseURL(%q) = %v, not ErrInvalidConfig", s, err)
			}
			if len(secret) >= 4 && !strings.ContainsAny(secret, "@/?#,:") && strings.Contains(s, "://") &&
				!strings.Contains(host, secret) && !strings.Contains(shownParts, secret) && strings.Contains(err.Error(), secret) {
				t.Fatalf("ParseURL(%q) error shows the secret: %v", s, err)
			}
		}
	})
}

func TestValidateNamesTheField(t *testing.T) {
	t.Parallel()
	base := Config{URL: "nats://h"}
	require.NoError(t, base.Validate())
	for field, mutate := range map[string]func(*Config){
		"URL":             func(c *Config) { c.URL = "" },
		"Durable":         func(c *Config) { c.Durable = "a.b" },
		"AckWait":         func(c *Config) { c.AckWait = -1 },
		"MaxDeliver":      func(c *Config) { c.MaxDeliver = -2 },
		"MaxDeliveries":   func(c *Config) { c.MaxDeliveries = -2 },
		"Lease":           func(c *Config) { c.Lease = -1 },
		"RetryWindow":     func(c *Config) { c.RetryWindow = -1 },
		"NackDelay":       func(c *Config) { c.NackDelay = -2 },
		"Consumers":       func(c *Config) { c.Consumers = -1 },
		"PublishTimeout":  func(c *Config) { c.PublishTimeout = -1 },
		"DuplicateWindow": func(c *Config) { c.DuplicateWindow = -1 },
		"MaxAge":          func(c *Config) { c.MaxAge = -1 },
	} {
		c := base
		mutate(&c)
		err := c.Validate()
		require.ErrorIs(t, err, ErrInvalidConfig, field)
		require.Contains(t, err.Error(), field, field)
	}
}

// The start-up check: defaults agree; an AckWait shorter than the lease, a
// MaxDeliver at or below the stack's cap, or a MaxAge too short for every
// delivery are refused, and the error names every figure.
func TestCheckClocks(t *testing.T) {
	t.Parallel()
	require.NoError(t, Config{URL: "nats://h"}.withDefaults().checkClocks())
	d := Config{URL: "nats://h"}.withDefaults()
	require.Equal(t, 20, d.MaxDeliver, "twice the stack's default cap")

	c := Config{URL: "nats://h", AckWait: 10 * time.Second, Lease: 30 * time.Second}.withDefaults()
	err := c.checkClocks()
	require.ErrorIs(t, err, ErrInvalidConfig)
	for _, s := range []string{"AckWait (10s)", "Lease (30s)", "every 10s", "RetryWindow 1m0s"} {
		require.Contains(t, err.Error(), s)
	}

	c = Config{URL: "nats://h", MaxDeliver: 10}.withDefaults()
	err = c.checkClocks()
	require.ErrorIs(t, err, ErrInvalidConfig)
	for _, s := range []string{"MaxDeliver (10)", "MaxDeliveries (10)", "AckWait 30s", "Lease 30s", "RetryWindow 1m0s"} {
		require.Contains(t, err.Error(), s)
	}

	c = Config{URL: "nats://h", MaxDeliveries: -1, MaxDeliver: 5}.withDefaults()
	require.ErrorContains(t, c.checkClocks(), "MaxDeliveries -1")
	c = Config{URL: "nats://h", MaxDeliveries: -1}.withDefaults()
	require.Equal(t, -1, c.MaxDeliver)
	require.NoError(t, c.checkClocks())

	c = Config{URL: "nats://h", MaxAge: 5 * time.Minute}.withDefaults()
	err = c.checkClocks()
	require.ErrorIs(t, err, ErrInvalidConfig)
	for _, s := range []string{"MaxAge (5m0s)", "10 deliveries", "RetryWindow 1m0s", "Lease 30s", "NackDelay 1s", "15m10s"} {
		require.Contains(t, err.Error(), s)
	}
	c = Config{URL: "nats://h", MaxAge: time.Hour}.withDefaults()
	require.NoError(t, c.checkClocks())
}
