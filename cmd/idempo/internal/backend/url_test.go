package backend

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/stretchr/testify/require"
)

func TestParseBroker(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]Kind{
		"": GoChannel, "gochannel": GoChannel, "kafka": Kafka,
		"kafka://127.0.0.1:9092":              Kafka,
		"kafka://a:9092,b:9093":               Kafka,
		"amqp://guest:guest@127.0.0.1:5672/":  AMQP,
		"amqps://u:p@rabbit.example:5671/vh1": AMQP,
		"nats://127.0.0.1:4222":               NATS,
		"nats://token@127.0.0.1:4222":         NATS,
		"tls://u:p@nats.example:4443":         NATS,
		"redis-stream://127.0.0.1:6379/0":     RedisStream,
		"rediss-stream://u:p@redis.example/2": RedisStream,
	} {
		s, err := ParseBroker(raw)
		require.NoError(t, err, raw)
		require.Equal(t, want, s.Kind, raw)
	}
	for raw, want := range map[string]string{
		"kafka://":               "",
		"kafka://host":           "not host:port",
		"kafka://a:1,b":          "invalid port",
		"kafka://a:x1":           "invalid",
		"amqp:///":               "no host",
		"mqtt://x:1883":          "unknown scheme",
		"nats:///":               "no host",
		"redis-stream:///0":      "no host",
		"rabbit":                 "not a URL",
		"amqp://u:pw@[::1/":      "invalid URL",
		"kafka://a:9092/,b:9093": "",
	} {
		_, err := ParseBroker(raw)
		if want == "" {
			continue
		}
		require.ErrorIs(t, err, ErrURL, raw)
		require.ErrorContains(t, err, want, raw)
		require.NotContains(t, err.Error(), "pw@", "no password in errors")
	}
}

func TestParseStore(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]Kind{
		"": Memory, "memory": Memory, "sqlite": SQLite,
		"redis://127.0.0.1:6379/0":                             Redis,
		"postgres://postgres@127.0.0.1:5432/test":              Postgres,
		"mysql://root@127.0.0.1:3306/test":                     MySQL,
		"sqlite:///tmp/x.db":                                   SQLite,
		"postgresql://u:p@h/db?sslmode=disable":                Postgres,
		"rediss://:secret@cache.example:6380/1":                Redis,
		"mariadb://root:pw@127.0.0.1:3306/test?parseTime=true": MySQL,
	} {
		s, err := ParseStore(raw)
		require.NoError(t, err, raw)
		require.Equal(t, want, s.Kind, raw)
		require.NotContains(t, s.String(), "secret")
	}
	for raw, want := range map[string]string{
		"redis://":                 "no host",
		"mysql://root@h:3306":      "no database",
		"sqlite://":                "",
		"mongodb://h/db":           "unknown scheme",
		"postgres://u:secret@%zz/": "invalid URL",
	} {
		_, err := ParseStore(raw)
		if want == "" {
			continue
		}
		require.ErrorIs(t, err, ErrURL, raw)
		require.ErrorContains(t, err, want, raw)
		require.NotContains(t, err.Error(), "secret")
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	require.Equal(t, "amqp://guest:xxxxx@127.0.0.1:5672/", Redact("amqp://guest:guest@127.0.0.1:5672/"))
	require.NotContains(t, Redact("postgres://u:secret@%zz/"), "secret")
}

// FuzzParse: parsing never panics, errors always match ErrURL, and no
// password ever appears in an error or a display string.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"kafka://a:1,b:2", "amqp://u:pw@h:5672/v", "redis://:pw@h:6379/0", "mysql://r:pw@h/db", "sqlite:///x", "%", "://", "postgres://u:pw@[::1]:5432/db"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, parse := range []func(string) (Spec, error){ParseBroker, ParseStore, ParseDB} {
			s, err := parse(raw)
			if err != nil {
				if !errors.Is(err, ErrURL) {
					t.Fatalf("error does not match ErrURL: %v", err)
				}
				continue
			}
			if s.URL != nil {
				if p, ok := s.URL.User.Password(); ok && len(p) >= 4 && strings.Contains(s.String(), p) && !strings.Contains(s.URL.User.Username(), p) && !strings.Contains(s.URL.Host, p) && !strings.Contains(s.URL.Path, p) {
					t.Fatalf("password %q shown in %q", p, s.String())
				}
			}
		}
	})
}

func TestParseDB(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]Kind{
		"postgres://postgres@127.0.0.1:5432/test": Postgres,
		"postgresql://u:p@h/db?sslmode=disable":   Postgres,
		"mysql://root@127.0.0.1:3306/test":        MySQL,
		"mariadb://root@h/test":                   MySQL,
		"sqlite:///tmp/x.db":                      SQLite,
		"sqlite://rel.db":                         SQLite,
	} {
		s, err := ParseDB(raw)
		require.NoError(t, err, raw)
		require.Equal(t, want, s.Kind, raw)
	}
	for raw, want := range map[string]string{
		"":                           "empty",
		"memory":                     "not a URL",
		"redis://127.0.0.1:6379/0":   `unknown scheme "redis"`,
		"postgres:///db":             "no host",
		"mysql://root@h":             "no database name",
		"sqlite://":                  "no file path",
		"postgres://u:secret@%zz/db": "invalid URL",
	} {
		_, err := ParseDB(raw)
		require.ErrorIs(t, err, ErrURL, raw)
		require.ErrorContains(t, err, want, raw)
		require.ErrorContains(t, err, "--db", raw)
		require.NotContains(t, err.Error(), "secret", raw)
	}
}

// TestMySQLDSNQueryCredentials: user and password in a mysql:// URL's query
// are the credentials, never session variables (the driver would send
// SET password = '…', which changes the account's password on MySQL 8).
func TestMySQLDSNQueryCredentials(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string][2]string{
		"mysql://root@127.0.0.1:3306/test?password=s%40cret":  {"root", "s@cret"},
		"mysql://h:3306/test?user=app&password=pw&timeout=5s": {"app", "pw"},
		"mysql://app:inurl@h:3306/test":                       {"app", "inurl"},
		"mysql://app:inurl@h:3306/test?password=inquery":      {"app", "inquery"},
	} {
		s, err := ParseDB(raw)
		require.NoError(t, err, raw)
		dsn, err := mysqlDSN(s.URL)
		require.NoError(t, err, raw)
		cfg, err := mysql.ParseDSN(dsn)
		require.NoError(t, err, raw)
		require.Equal(t, want[0], cfg.User, raw)
		require.Equal(t, want[1], cfg.Passwd, raw)
		require.NotContains(t, cfg.Params, "password", raw)
		require.NotContains(t, cfg.Params, "user", raw)
	}
}
