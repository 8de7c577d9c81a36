package backend

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/dedup/redisstore"
)

// openRedisClient connects to the server a spec names and pings it.
func openRedisClient(ctx context.Context, spec Spec) (*redis.Client, error) {
	opts, err := redis.ParseURL(spec.Raw)
	if err != nil {
		return nil, urlError("store", spec.Raw, err.Error())
	}
	// Context deadlines must cut a call short, or a slow server holds a
	// handler for the client's own read timeout.
	opts.ContextTimeoutEnabled = true
	client := redis.NewClient(opts)
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis at %s is unreachable: %w", opts.Addr, err)
	}
	return client, nil
}

func openRedis(ctx context.Context, spec Spec, runID string) (*Store, error) {
	client, err := openRedisClient(ctx, spec)
	if err != nil {
		return nil, err
	}
	prefix := "idempo:" + runID + ":"
	st, err := redisstore.New(client, &redisstore.Options{Prefix: prefix, Coalesce: true})
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	drop := func(ctx context.Context) error { return unlinkPrefix(ctx, client, prefix) }
	return &Store{Spec: spec, Display: spec.String(), URL: spec.Raw, Store: st, Drop: drop, closers: []func() error{client.Close}}, nil
}

// unlinkPrefix removes every key that starts with prefix.
func unlinkPrefix(ctx context.Context, client *redis.Client, prefix string) error {
	iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	batch := make([]string, 0, 1000)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := client.Unlink(ctx, batch...).Err()
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	return flush()
}
