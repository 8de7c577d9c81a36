package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/cmd/idempo/internal/demo"
	"github.com/idempo/idempo/cmd/idempo/internal/verify"
)

// verifyEvents is the CI size of each verify run; `make verify-full` runs
// the large matrix recorded in docs/reliability.md.
const verifyEvents = 1000

const rabbitURL = "amqp://guest:guest@127.0.0.1:5672/"

// natsURL is the shared NATS JetStream server.
const natsURL = "nats://127.0.0.1:4222"

// redisStreamURL is the shared Redis as a Redis Streams broker.
const redisStreamURL = "redis-stream://127.0.0.1:6379/0"

func verifyRun(t *testing.T, o verify.Options) verify.Result {
	t.Helper()
	t.Setenv("IDEMPO_TEST_CLI", "1")
	o.Command = []string{os.Args[0]}
	o.Faults = demo.DefaultFaults
	if o.Events == 0 {
		o.Events = verifyEvents
	}
	o.Timeout = 4 * time.Minute
	o.Stderr = testWriter{t}
	o.Debug = true // shown only when the test fails
	res, err := verify.Run(context.Background(), o)
	require.NoError(t, err)
	t.Logf("verify %s × %s: %+v", o.Broker, o.Store, res)
	return res
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// The CI matrix: each backend × store with consumer kills; a store restart
// in the Redis run; Kafka in key order once, with order_violations = 0. The verdict must hold at every guarantee level.
func TestVerifyMatrix(t *testing.T) {
	cases := []struct {
		name string
		o    verify.Options
	}{
		{"kafka-redis-restart", verify.Options{Broker: "kafka", OwnRedis: true, StoreRestarts: 1, Kills: 2}},
		{"kafka-postgres-inbox", verify.Options{Broker: "kafka", Store: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", Kills: 2}},
		{"kafka-mariadb-inbox", verify.Options{Broker: "kafka", Store: "mysql://root@127.0.0.1:3306/test", Kills: 2}},
		{"kafka-key-postgres-inbox", verify.Options{Broker: "kafka", Ordering: "key", Store: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", Kills: 2}},
		{"rabbitmq-redis", verify.Options{Broker: rabbitURL, Store: "redis://127.0.0.1:6379/0", Kills: 2}},
		{"rabbitmq-postgres-inbox", verify.Options{Broker: rabbitURL, Store: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", Kills: 2}},
		{"rabbitmq-mariadb-inbox", verify.Options{Broker: rabbitURL, Store: "mysql://root@127.0.0.1:3306/test", Kills: 2}},
		{"nats-redis", verify.Options{Broker: natsURL, Store: "redis://127.0.0.1:6379/0", Kills: 2}},
		{"nats-postgres-inbox", verify.Options{Broker: natsURL, Store: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", Kills: 2}},
		{"redisstream-redis", verify.Options{Broker: redisStreamURL, Store: "redis://127.0.0.1:6379/0", Kills: 2}},
		{"redisstream-postgres-inbox", verify.Options{Broker: redisStreamURL, Store: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", Kills: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := verifyRun(t, tc.o)
			if tc.o.Broker == redisStreamURL {
				deleteRedisStreams(t, res.DLQTopic, strings.TrimSuffix(res.DLQTopic, ".dlq"))
			}
			require.NoError(t, res.Verdict())
			require.Zero(t, res.Lost)
			require.Equal(t, res.ExpectedDeadLettered, res.DeadLettered)
			require.Positive(t, res.Kills, "the run killed consumers")
			if res.Inbox {
				require.Zero(t, res.DoubleEffects, "the inbox allows no double effect")
			}
			if tc.o.Broker == "kafka" {
				require.NotNil(t, res.OrderViolations, "Kafka keeps order per key")
				require.Zero(t, *res.OrderViolations)
			} else {
				require.Nil(t, res.OrderViolations, "RabbitMQ, NATS and Redis Streams keep no order to check")
			}
			if tc.o.StoreRestarts > 0 {
				require.Positive(t, res.Restarts, "the store was restarted")
			}
		})
	}
}

// A deliberately broken build (retries and the DLQ without dedup, the way
// Watermill users wire them by hand) must make verify fail.
func TestVerifyCatchesABrokenBuild(t *testing.T) {
	res := verifyRun(t, verify.Options{Broker: "kafka", Store: "redis://127.0.0.1:6379/0", Kills: -1, Break: "no-dedup", Events: 200})
	require.Error(t, res.Verdict())
	require.Greater(t, res.DoubleEffects, res.MaxAllowedDoubleEffects)
}

func TestVerifyRejectsInProcessBackends(t *testing.T) {
	code, _, errOut := runCLI(t, "verify", "--broker", "gochannel", "--store", "redis://127.0.0.1:6379/0")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "other processes can reach")
	code, _, errOut = runCLI(t, "verify", "--store", "memory")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "shared by processes")
}

// The outbox matrix: producers, relays and consumers as processes, each
// kind killed and restarted, on PostgreSQL and MariaDB with RabbitMQ and
// the embedded Kafka cluster (in key order). Every committed change has
// exactly one effect at each hop and none exists for a rolled-back one.
func TestVerifyOutboxMatrix(t *testing.T) {
	const pg = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	const maria = "mysql://root@127.0.0.1:3306/test"
	cases := []struct {
		name string
		o    verify.Options
	}{
		{"rabbitmq-postgres", verify.Options{Broker: rabbitURL, Store: pg}},
		{"rabbitmq-mariadb", verify.Options{Broker: rabbitURL, Store: maria}},
		{"kafka-key-postgres", verify.Options{Broker: "kafka", Ordering: "key", Store: pg}},
		{"kafka-key-mariadb", verify.Options{Broker: "kafka", Ordering: "key", Store: maria}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Outbox, tc.o.Kills = true, 6
			res := verifyRun(t, tc.o)
			require.NoError(t, res.Verdict())
			require.Zero(t, res.Lost)
			require.Zero(t, res.DoubleEffects)
			require.NotNil(t, res.PhantomEffects)
			require.Zero(t, *res.PhantomEffects)
			require.Positive(t, res.RolledBack, "some changes were rolled back")
			require.Equal(t, res.UniqueEvents, res.FollowUpEffects, "every committed change reached the second hop")
			for _, role := range []string{verify.RoleProducer, verify.RoleRelay, verify.RoleConsumer} {
				require.Positive(t, res.KillsByRole[role], "a %s was killed", role)
			}
			if tc.o.Broker == "kafka" {
				require.NotNil(t, res.OrderViolations)
				require.Zero(t, *res.OrderViolations)
			}
		})
	}
}

// A deliberately broken build, whose producers write the event after the
// business transaction ended, makes verify --outbox fail: rolled-back
// changes get effects.
func TestVerifyOutboxCatchesAWriteOutsideTheTransaction(t *testing.T) {
	res := verifyRun(t, verify.Options{
		Broker: rabbitURL, Store: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
		Outbox: true, Kills: -1, Break: "outside-tx", Events: 300,
	})
	require.ErrorContains(t, res.Verdict(), "phantom_effects")
	require.Positive(t, *res.PhantomEffects)
}

func TestVerifyOutboxRefusesWhatItCannotRun(t *testing.T) {
	code, _, errOut := runCLI(t, "verify", "--outbox", "--store", "redis://127.0.0.1:6379/0")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--outbox needs a SQL --store")
	code, _, errOut = runCLI(t, "verify", "--outbox", "--no-inbox", "--store", "postgres://postgres@127.0.0.1:5432/test")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--no-inbox")
	code, _, errOut = runCLI(t, "verify", "--outbox", "--broker", "gochannel", "--store", "postgres://postgres@127.0.0.1:5432/test")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "other processes can reach")
}
