package redisstream_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/redisstream"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{
		"redis-stream://localhost",
		"redis-stream://127.0.0.1:6379/0",
		"redis-stream://user:secret@host:6380/3",
		"redis-stream://:secret@host/1",
		"rediss-stream://user:secret@host:6379/0",
	} {
		cfg, err := redisstream.ParseURL(ok)
		require.NoError(t, err, ok)
		require.Equal(t, ok, cfg.URL)
	}
	for bad, want := range map[string]string{
		"":                                     "want redis-stream://",
		"redis://host:6379/0":                  `scheme "redis"`,
		"redis-stream://":                      "no host",
		"redis-stream://u:secret@host/x":       "database number",
		"redis-stream://u:secret@host:99999/0": "port",
		"redis-stream://u:secret@host/0?a=b":   "query",
		"redis-stream://u:secret@host/0/1":     "database number",
		"redis-stream://u:secret@host:port/0":  "",
		"redis-stream://u:se%zzcret@host:1/0":  "",
		"redis-stream://u:secret@host/-1":      "database number",
	} {
		_, err := redisstream.ParseURL(bad)
		require.ErrorIs(t, err, redisstream.ErrInvalidConfig, bad)
		require.Contains(t, err.Error(), want, bad)
		require.NotContains(t, err.Error(), "secret", "the password leaked: %v", err)
		require.NotContains(t, err.Error(), "se%zzcret", "the password leaked: %v", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	base := redisstream.Config{URL: "redis-stream://localhost:6379/0"}
	require.NoError(t, base.Validate())
	for field, mut := range map[string]func(*redisstream.Config){
		"URL":           func(c *redisstream.Config) { c.URL = "" },
		"Lease":         func(c *redisstream.Config) { c.Lease = -1 },
		"ClaimIdle":     func(c *redisstream.Config) { c.ClaimIdle = -1 },
		"ClaimInterval": func(c *redisstream.Config) { c.ClaimInterval = -1 },
		"Consumers":     func(c *redisstream.Config) { c.Consumers = -1 },
		"NackDelay":     func(c *redisstream.Config) { c.NackDelay = -2 },
		"Block":         func(c *redisstream.Config) { c.Block = -time.Second },
		"MaxLen":        func(c *redisstream.Config) { c.MaxLen = -1 },
		"Consumer":      func(c *redisstream.Config) { c.Consumer = "a b" },
	} {
		c := base
		mut(&c)
		err := c.Validate()
		require.ErrorIs(t, err, redisstream.ErrInvalidConfig, field)
		require.Contains(t, err.Error(), field)
	}
	c := base
	c.NackDelay = -1
	require.NoError(t, c.Validate())
}

func TestRedact(t *testing.T) {
	t.Parallel()
	require.Equal(t, "redis-stream://u:xxxxx@h:1/0", redisstream.Redact("redis-stream://u:pw@h:1/0"))
	require.Equal(t, "rediss-stream://:xxxxx@h/0", redisstream.Redact("rediss-stream://:pw@h/0"))
	require.Equal(t, "redis-stream://h/0", redisstream.Redact("redis-stream://h/0"))
	require.NotContains(t, redisstream.Redact("redis-stream://u:p%zz@w@h/0"), "p%zz")
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"redis-stream://u:pw@h:6379/0", "rediss-stream://:pw@h/1", "redis-stream://h", "redis-stream://u:p%zzw@h/0",
		"redis-stream://u:pw@[::1]:6379/0", "redis-stream://u:pw@h:0/0", "x", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := redisstream.ParseURL(s)
		if err != nil {
			require.ErrorIs(t, err, redisstream.ErrInvalidConfig)
			i := strings.Index(s, "://")
			j := strings.LastIndex(s, "@")
			if i >= 0 && j > i {
				userinfo := s[i+3 : j]
				if _, pw, ok := strings.Cut(userinfo, ":"); ok && len(pw) >= 6 && !isFixedText(pw) {
					require.NotContains(t, err.Error(), pw, "the password leaked")
				}
			}
			return
		}
		require.Equal(t, s, cfg.URL)
		require.NoError(t, cfg.Validate())
	})
}

// isFixedText reports whether pw occurs in the error's fixed wording.
func isFixedText(pw string) bool {
	const fixed = "redisstream invalid URL xxxxx"
	return strings.Contains(fixed, pw)
}
