package backend

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

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
		return nil, fmt.Errorf("redis at %s %s: %w", opts.Addr, reach(err), err)
	}
	return client, nil
}

func openRedis(ctx context.Context, spec Spec, runID string) (*Store, error) {
	client, err := openRedisClient(ctx, spec)
	if err != nil {
		return nil, err
	}
	prefix := "idempo:" + runID + ":"
	st, err := redisstore.New(client, &redisstore.Options{Prefix: prefix})
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	drop := func(ctx context.Context) error { return unlinkPrefix(ctx, client, prefix) }
	return &Store{
		Spec: spec, Display: spec.String(), URL: spec.Raw, Store: st, Drop: drop,
		ServerCPU: func(ctx context.Context) (time.Duration, error) { return commandCPU(ctx, client) },
		Redis:     client,
		closers:   []func() error{client.Close},
	}, nil
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

// commandCPU sums the usec of every command in Redis's INFO commandstats:
// the server's CPU time spent running commands since its stats were reset.
func commandCPU(ctx context.Context, client *redis.Client) (time.Duration, error) {
	info, err := client.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, err
	}
	return parseCommandCPU(info), nil
}

// parseCommandCPU reads lines like
// "cmdstat_evalsha:calls=10,usec=123,usec_per_call=12.30,..." and sums usec.
func parseCommandCPU(info string) time.Duration {
	var usec int64
	for _, line := range strings.Split(info, "\n") {
		if !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		_, fields, _ := strings.Cut(strings.TrimSpace(line), ":")
		for _, f := range strings.Split(fields, ",") {
			if v, ok := strings.CutPrefix(f, "usec="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				usec += n
			}
		}
	}
	return time.Duration(usec) * time.Microsecond
}
