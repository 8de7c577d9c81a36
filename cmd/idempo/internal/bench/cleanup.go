package bench

import (
	"context"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
)

// cleaner removes what a run leaves on shared servers: the RabbitMQ queue
// or NATS or Redis stream of each round (durable, so it would outlive the run) and the run's Redis
// keys. SQL tables are dropped by the backend; Kafka topics of an external
// cluster are left (as by idempo demo), those of the embedded one vanish
// with it.
type cleaner struct {
	amqpURL string
	// del deletes NATS streams (file-backed, kept until deleted) and Redis
	// streams.
	del     func(ctx context.Context, topics ...string) error
	mu      sync.Mutex
	pending []string

	redis       *redis.Client // nil unless the store is Redis
	redisPrefix string
}

func newCleaner(_ context.Context, broker *backend.Broker, store *backend.Store, runID string) (*cleaner, error) {
	c := &cleaner{}
	if broker.Spec.Kind == backend.AMQP {
		c.amqpURL = broker.Spec.Raw
	}
	if broker.Spec.Kind == backend.NATS || broker.Spec.Kind == backend.RedisStream {
		c.del = broker.Delete
	}
	if store.Spec.Kind == backend.Redis {
		opts, err := redis.ParseURL(store.Spec.Raw)
		if err != nil {
			return nil, err
		}
		opts.ContextTimeoutEnabled = true
		c.redis = redis.NewClient(opts)
		// The backend's prefix for the run (see backend.openRedis).
		c.redisPrefix = "idempo:" + runID + ":"
	}
	return c, nil
}

// queue notes a queue to delete after the round.
func (c *cleaner) queue(name string) {
	if c.amqpURL == "" && c.del == nil {
		return
	}
	c.mu.Lock()
	c.pending = append(c.pending, name)
	c.mu.Unlock()
}

// queues deletes the noted queues, best effort.
func (c *cleaner) queues(ctx context.Context) {
	c.mu.Lock()
	names := c.pending
	c.pending = nil
	c.mu.Unlock()
	if len(names) == 0 {
		return
	}
	if c.del != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = c.del(dctx, names...)
		return
	}
	conn, err := amqp091.DialConfig(c.amqpURL, amqp091.Config{Dial: amqp091.DefaultDial(10 * time.Second)})
	if err != nil {
		return
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	defer func() { _ = ch.Close() }()
	for _, n := range names {
		_, _ = ch.QueueDelete(n, false, false, false)
	}
}

// close removes the run's Redis keys and closes the client.
func (c *cleaner) close(ctx context.Context) {
	c.queues(ctx)
	if c.redis == nil {
		return
	}
	defer func() { _ = c.redis.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	iter := c.redis.Scan(ctx, 0, c.redisPrefix+"*", 1000).Iterator()
	batch := make([]string, 0, 1000)
	flush := func() {
		if len(batch) > 0 {
			_ = c.redis.Unlink(ctx, batch...).Err()
			batch = batch[:0]
		}
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
}
