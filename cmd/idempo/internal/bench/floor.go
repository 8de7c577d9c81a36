package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/redisstore"
	"github.com/idempo/idempo/internal/redisscripts"
)

// redisFloor is go-redis alone at the stack's concurrency, sending the
// store's own scripts (EVALSHA, loaded beforehand) with the arguments the
// store sends: n fresh keys, inFlight of them at a time, spread over one
// connection per CPU; each connection pipelines the claims of its share of
// the keys in flight, then their completions, and so on. No store code
// (the keys are made before the clock starts), broker, router or handler
// is involved, so its messages per second are the best a client reaches
// with these scripts and this many messages in flight. It returns the time
// the n messages took.
func redisFloor(ctx context.Context, client *redis.Client, st *redisstore.Store, scope string, n, inFlight int) (time.Duration, error) {
	for _, s := range []*redis.Script{redisscripts.Claim, redisscripts.Finish} {
		if err := s.Load(ctx, client).Err(); err != nil {
			return 0, fmt.Errorf("store floor: load the scripts: %w", err)
		}
	}
	conns := max(min(runtime.GOMAXPROCS(0), inFlight), 1)
	keys := make([]string, n)
	tokens := make([]string, n)
	for i := range keys {
		keys[i] = st.RedisKey(dedup.Key{Scope: scope, ID: "f" + strconv.Itoa(i)})
		tokens[i] = string(dedup.NewToken())
	}
	lease, ret := time.Minute.Milliseconds(), retention.Milliseconds()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	start := time.Now()
	for c := range conns {
		// Connection c takes keys c, c+conns, …, per (its share of
		// inFlight) at a time.
		per := max(inFlight/conns, 1)
		wg.Go(func() {
			var mine []int
			for i := c; i < n; i += conns {
				mine = append(mine, i)
			}
			cmds := make([]*redis.Cmd, 0, per)
			for len(mine) > 0 && ctx.Err() == nil {
				batch := mine[:min(per, len(mine))]
				mine = mine[len(batch):]
				err := pipe(ctx, client, "claim", func(p redis.Pipeliner) []*redis.Cmd {
					cmds = cmds[:0]
					for _, i := range batch {
						cmds = append(cmds, redisscripts.Claim.EvalSha(ctx, p, []string{keys[i]}, tokens[i], lease, ret, "", ""))
					}
					return cmds
				})
				if err == nil {
					err = pipe(ctx, client, "complete", func(p redis.Pipeliner) []*redis.Cmd {
						cmds = cmds[:0]
						for _, i := range batch {
							cmds = append(cmds, redisscripts.Finish.EvalSha(ctx, p, []string{keys[i]}, tokens[i], ret, "done"))
						}
						return cmds
					})
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, fmt.Errorf("store floor: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return max(time.Since(start), 1), nil
}

// pipe sends the commands fill queues as one pipeline and checks that each
// of those it returns answered 1: a fresh key acquired, a held record
// completed.
func pipe(ctx context.Context, client *redis.Client, what string, fill func(redis.Pipeliner) []*redis.Cmd) error {
	p := client.Pipeline()
	cmds := fill(p)
	if _, err := p.Exec(ctx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, c := range cmds {
		v, err := c.Int64()
		if err != nil {
			return fmt.Errorf("%s of a fresh key: %w", what, err)
		}
		if v != 1 {
			return fmt.Errorf("%s of a fresh key: reply %v, want 1", what, v)
		}
	}
	return nil
}

// ratio rounds a/b to four decimals (0 when b is 0).
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*1e4) / 1e4
}
