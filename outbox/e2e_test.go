package outbox_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/broker/amqp"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/middleware"
	"github.com/idempo/idempo/outbox"
)

const (
	childAMQPEnv  = "IDEMPO_OUTBOX_TEST_AMQP"
	childTopicEnv = "IDEMPO_OUTBOX_TEST_TOPIC"
)

func amqpURL() string {
	if u := os.Getenv("IDEMPO_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// blockingPublisher passes messages to next and, once it has published
// blockAfter, hangs for good: the relay process is killed between the
// publish and the mark.
type blockingPublisher struct {
	next       message.Publisher
	blockAfter int64
	n          atomic.Int64
}

func (p *blockingPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		if err := p.next.Publish(topic, m); err != nil {
			return err
		}
		if p.n.Add(1) >= p.blockAfter {
			select {}
		}
	}
	return nil
}

func (p *blockingPublisher) Close() error { return p.next.Close() }

// childAMQPRelay is the child relay of TestEndToEndExactlyOnce.
func childAMQPRelay(ob *outbox.Outbox, block int64) error {
	cfg, err := amqp.ParseURL(os.Getenv(childAMQPEnv))
	if err != nil {
		return err
	}
	pub, err := amqp.NewPublisher(cfg, nil)
	if err != nil {
		return err
	}
	rc := fast(&blockingPublisher{next: pub, blockAfter: block})
	rc.BatchSize = 10
	r, err := outbox.NewRelay(ob, rc)
	if err != nil {
		return err
	}
	return r.Run(context.Background())
}

// TestEndToEndExactlyOnce: outbox → a relay process killed after
// publishing to RabbitMQ and before marking → another relay publishes the
// same UUIDs again → the idempo stack with the SQL inbox applies each
// committed row's effect exactly once.
func TestEndToEndExactlyOnce(t *testing.T) {
	t.Parallel()
	forEachDialect(t, endToEnd)
}

func endToEnd(t *testing.T, d sqlstore.Dialect) {
	e := newEnv(t, d, nil)
	brokerCfg, err := amqp.ParseURL(amqpURL())
	require.NoError(t, err)
	topic := randomName("idempo_test_outbox_")
	sub, err := amqp.NewSubscriber(brokerCfg, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, sub.Close()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	msgs, err := sub.Subscribe(ctx, topic) // declares the queue before anything is published
	require.NoError(t, err)
	t.Cleanup(func() { deleteQueue(brokerCfg.URL, topic) })

	const rows, blockAfter = 60, 25
	written := map[string]bool{}
	for s := range rows / 6 {
		var ms []*message.Message
		for k := range 6 {
			m := msg(fmtKey(k), s)
			written[m.UUID] = true
			ms = append(ms, m)
		}
		e.write(t, topic, ms...)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=relay", childDialectEnv+"="+string(d), childDSNEnv+"="+e.dsn,
		childTableEnv+"="+e.ob.Table(), childBlockEnv+"="+strconv.Itoa(blockAfter),
		childAMQPEnv+"="+amqpURL(), childTopicEnv+"="+topic)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// The consumer: the idempo stack with the transactional inbox on the
	// same PostgreSQL; the effect is a row in a table without a unique key.
	store, err := sqlstore.New(e.db, &sqlstore.Options{Table: randomName("idempo_dedup_"), Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.NoError(t, store.Migrate(ctx))
	effects := randomName("effects_")
	_, err = e.db.ExecContext(ctx, "CREATE TABLE "+effects+" (event_id VARCHAR(64) NOT NULL)")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = e.db.Exec("DROP TABLE IF EXISTS " + effects)
		_, _ = e.db.Exec("DROP TABLE IF EXISTS " + quote(d, store.Table()))
	})
	stack, err := middleware.New(middleware.Config{
		Store: store, DLQ: dlq.Config{Publisher: &recorder{}}, Transactional: true, Scope: "outbox-e2e",
		Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	defer func() { _ = stack.Close() }()
	insert := "INSERT INTO " + effects + " (event_id) VALUES (?)"
	if d == sqlstore.Postgres {
		insert = "INSERT INTO " + effects + " (event_id) VALUES ($1)"
	}
	h := stack.Middleware(func(m *message.Message) ([]*message.Message, error) {
		tx, _ := sqlstore.TxFromContext(m.Context())
		_, err := tx.ExecContext(m.Context(), insert, m.UUID)
		return nil, err
	})
	var deliveries atomic.Int64
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for m := range msgs {
			deliveries.Add(1)
			if _, err := h(m); err != nil {
				m.Nack()
				continue
			}
			m.Ack()
		}
	}()

	waitFor(t, 60*time.Second, "the relay process to publish", func() bool { return deliveries.Load() >= blockAfter })
	select {
	case err := <-exited:
		t.Fatalf("the relay process exited before it was killed: %v", err)
	default:
	}
	require.NoError(t, cmd.Process.Kill())
	err = <-exited
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit) && !exit.Exited(), "killed by a signal: %v", err)

	pub, err := amqp.NewPublisher(brokerCfg, nil)
	require.NoError(t, err)
	_, stop := runRelay(t, e.ob, fast(pub))
	waitFor(t, 60*time.Second, "the outbox drained", func() bool { return e.count(t, "", "") == 0 })
	effectCount := func() int {
		var n int
		require.NoError(t, e.db.QueryRow("SELECT COUNT(*) FROM "+effects).Scan(&n))
		return n
	}
	distinct := func() int {
		var n int
		require.NoError(t, e.db.QueryRow("SELECT COUNT(DISTINCT event_id) FROM "+effects).Scan(&n))
		return n
	}
	waitFor(t, 60*time.Second, "every effect", func() bool { return distinct() == rows })
	stop()
	require.NoError(t, pub.Close())
	time.Sleep(200 * time.Millisecond) // a late duplicate would show now
	cancel()
	<-consumed

	require.Equal(t, rows, distinct(), "every committed row has its effect")
	require.Equal(t, rows, effectCount(), "and only one")
	require.Greater(t, deliveries.Load(), int64(rows), "the killed batch was delivered again (absorbed by dedup)")
	t.Logf("%d rows, %d deliveries, %d effects", rows, deliveries.Load(), effectCount())
}

func deleteQueue(url, queue string) {
	conn, err := amqp091.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close()
	_, _ = ch.QueueDelete(queue, false, false, false)
}
