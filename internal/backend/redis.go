package backend

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/dedup/redisstore"
)

func init() {
	storeOpeners[Redis] = openRedis
	// go-redis prints dial failures itself; the CLI reports them once, as errors.
	redis.SetLogger(quietRedis{})
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func openRedis(ctx context.Context, spec Spec, runID string) (*Store, error) {
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
	st, err := redisstore.New(client, &redisstore.Options{Prefix: "idempo:" + runID + ":", Coalesce: true})
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	return &Store{Spec: spec, Display: spec.String(), URL: spec.Raw, Store: st, closers: []func() error{client.Close}}, nil
}
