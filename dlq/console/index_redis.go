package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix is the default of [RedisIndexOptions.Prefix].
const DefaultRedisPrefix = "idempo:console:"

// RedisIndexOptions configures [NewRedisIndex]. A nil *RedisIndexOptions
// means all defaults.
type RedisIndexOptions struct {
	// Prefix starts every key of the index. Defaults to
	// [DefaultRedisPrefix]. The keys of one DLQ share a hash tag (the DLQ's
	// name in braces), so they live on one Redis Cluster slot.
	Prefix string
}

// NewRedisIndex returns an index in Redis, the resolution store's server
// (dlq/resolution/redisstore), kept across restarts like [NewSQLIndex]'s.
//
// Per DLQ it keeps the entries (PREFIX{DLQ}:rows, a hash of JSON rows, no
// payloads), their order (PREFIX{DLQ}:order), the resolution marks
// (PREFIX{DLQ}:marks), the last offset read per partition
// (PREFIX{DLQ}:ends) and a version counter (PREFIX{DLQ}:ver) that every
// write increments; jobs are in PREFIX:jobs. Writes are Lua scripts, atomic
// per call, so consoles sharing the index do not add an entry twice.
//
// Pages are answered from a copy in memory that each read brings up to
// date when the version has changed: the rows added since, then the marks.
// A restarted console reads the index from Redis, not the DLQs from their
// start. It is safe for concurrent use.
func NewRedisIndex(client redis.UniversalClient, opts *RedisIndexOptions) (Index, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: NewRedisIndex: nil Redis client", ErrInvalidConfig)
	}
	var o RedisIndexOptions
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = DefaultRedisPrefix
	}
	return &redisIndex{
		c: client, prefix: o.Prefix,
		mem:    NewMemoryIndex().(*memIndex),
		synced: map[string]redisSynced{},
	}, nil
}

type redisIndex struct {
	c      redis.UniversalClient
	prefix string
	mem    *memIndex // the copy pages read

	syncMu sync.Mutex
	synced map[string]redisSynced
}

// redisSynced is how far the copy of one DLQ has read the index.
type redisSynced struct {
	ver  int64 // the version read
	rows int64 // how many entries of the order list it holds
}

var _ Index = (*redisIndex)(nil)

func (x *redisIndex) key(dlq, what string) string { return x.prefix + "{" + dlq + "}:" + what }

func (x *redisIndex) wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("console: redis index: %s: %w", what, err)
}

// addScript adds rows not yet known (ARGV: n, then n pairs of ID and JSON,
// then pairs of partition and offset) and bumps the version.
var addScript = redis.NewScript(`
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local id, js = ARGV[2 + 2*i], ARGV[3 + 2*i]
  if redis.call('HSETNX', KEYS[1], id, js) == 1 then
    redis.call('RPUSH', KEYS[2], id)
  end
end
for i = 2 + 2*n, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i+1])
end
return redis.call('INCR', KEYS[4])
`)

// marksScript sets (or, for "", clears) the marks of known entries (ARGV:
// pairs of ID and JSON) and bumps the version.
var marksScript = redis.NewScript(`
for i = 1, #ARGV, 2 do
  if ARGV[i+1] == '' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  elseif redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i+1])
  end
end
return redis.call('INCR', KEYS[3])
`)

// sync brings the copy of dlq up to date with Redis.
func (x *redisIndex) sync(ctx context.Context, dlq string) error {
	x.syncMu.Lock()
	defer x.syncMu.Unlock()
	s := x.synced[dlq]
	ver, err := x.c.Get(ctx, x.key(dlq, "ver")).Int64()
	if errors.Is(err, redis.Nil) {
		ver, err = 0, nil
	}
	if err != nil {
		return x.wrap("read the version of "+dlq, err)
	}
	if ver == s.ver && s.ver != 0 {
		return nil
	}
	// New rows, in the order they were added.
	const chunk = 1000
	for {
		ids, err := x.c.LRange(ctx, x.key(dlq, "order"), s.rows, s.rows+chunk-1).Result()
		if err != nil {
			return x.wrap("read the entries of "+dlq, err)
		}
		if len(ids) == 0 {
			break
		}
		vals, err := x.c.HMGet(ctx, x.key(dlq, "rows"), ids...).Result()
		if err != nil {
			return x.wrap("read the entries of "+dlq, err)
		}
		rows := make([]row, 0, len(vals))
		for i, v := range vals {
			js, ok := v.(string)
			if !ok {
				return x.wrap("read the entries of "+dlq, fmt.Errorf("entry %q is listed but missing", ids[i]))
			}
			var r row
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				return x.wrap("read entry "+strconv.Quote(ids[i])+" of "+dlq, err)
			}
			r.mark = mark{}
			rows = append(rows, r)
		}
		if err := x.mem.add(ctx, dlq, rows, nil); err != nil {
			return err
		}
		s.rows += int64(len(ids))
	}
	ends, err := x.c.HGetAll(ctx, x.key(dlq, "ends")).Result()
	if err != nil {
		return x.wrap("read the ends of "+dlq, err)
	}
	endOffsets := make(map[string]int64, len(ends))
	for p, v := range ends {
		if endOffsets[p], err = strconv.ParseInt(v, 10, 64); err != nil {
			return x.wrap("read the ends of "+dlq, err)
		}
	}
	if err := x.mem.add(ctx, dlq, nil, endOffsets); err != nil {
		return err
	}
	// The marks: every one Redis holds, and none for the others.
	raw, err := x.c.HGetAll(ctx, x.key(dlq, "marks")).Result()
	if err != nil {
		return x.wrap("read the marks of "+dlq, err)
	}
	old, err := x.mem.marks(ctx, dlq)
	if err != nil {
		return err
	}
	changes := make(map[string]mark, len(raw)+len(old))
	for id := range old {
		changes[id] = mark{}
	}
	for id, js := range raw {
		var mk mark
		if err := json.Unmarshal([]byte(js), &mk); err != nil {
			return x.wrap("read the mark of "+strconv.Quote(id)+" in "+dlq, err)
		}
		changes[id] = mk
	}
	if err := x.mem.setMarks(ctx, dlq, changes); err != nil {
		return err
	}
	s.ver = ver
	x.synced[dlq] = s
	return nil
}

func (x *redisIndex) state(ctx context.Context, dlq string) (indexState, error) {
	if err := x.sync(ctx, dlq); err != nil {
		return indexState{}, err
	}
	return x.mem.state(ctx, dlq)
}

func (x *redisIndex) add(ctx context.Context, dlq string, rows []row, ends map[string]int64) error {
	args := make([]any, 0, 1+2*len(rows)+2*len(ends))
	args = append(args, len(rows))
	for _, r := range rows {
		r.mark = mark{}
		js, err := json.Marshal(r)
		if err != nil {
			return x.wrap("encode an entry", err)
		}
		args = append(args, r.ID, js)
	}
	for p, off := range ends {
		args = append(args, p, off)
	}
	keys := []string{x.key(dlq, "rows"), x.key(dlq, "order"), x.key(dlq, "ends"), x.key(dlq, "ver")}
	if err := addScript.Run(ctx, x.c, keys, args...).Err(); err != nil {
		return x.wrap("add entries to "+dlq, err)
	}
	return x.sync(ctx, dlq)
}

func (x *redisIndex) marks(ctx context.Context, dlq string) (map[string]mark, error) {
	if err := x.sync(ctx, dlq); err != nil {
		return nil, err
	}
	return x.mem.marks(ctx, dlq)
}

func (x *redisIndex) setMarks(ctx context.Context, dlq string, changes map[string]mark) error {
	if len(changes) == 0 {
		return nil
	}
	args := make([]any, 0, 2*len(changes))
	for id, mk := range changes {
		js := []byte{}
		if mk != (mark{}) {
			var err error
			if js, err = json.Marshal(mk); err != nil {
				return x.wrap("encode a mark", err)
			}
		}
		args = append(args, id, js)
	}
	keys := []string{x.key(dlq, "rows"), x.key(dlq, "marks"), x.key(dlq, "ver")}
	if err := marksScript.Run(ctx, x.c, keys, args...).Err(); err != nil {
		return x.wrap("set the marks of "+dlq, err)
	}
	return x.sync(ctx, dlq)
}

func (x *redisIndex) groups(ctx context.Context, dlq string, since []time.Time) ([]group, error) {
	if err := x.sync(ctx, dlq); err != nil {
		return nil, err
	}
	return x.mem.groups(ctx, dlq, since)
}

func (x *redisIndex) hourly(ctx context.Context, dlq string, from time.Time) (map[int64]int, error) {
	if err := x.sync(ctx, dlq); err != nil {
		return nil, err
	}
	return x.mem.hourly(ctx, dlq, from)
}

func (x *redisIndex) list(ctx context.Context, q query) ([]row, int, error) {
	if err := x.sync(ctx, q.DLQ); err != nil {
		return nil, 0, err
	}
	return x.mem.list(ctx, q)
}

func (x *redisIndex) get(ctx context.Context, dlq, id string) (row, bool, error) {
	if err := x.sync(ctx, dlq); err != nil {
		return row{}, false, err
	}
	return x.mem.get(ctx, dlq, id)
}

func (x *redisIndex) saveJob(ctx context.Context, id string, state []byte) error {
	return x.wrap("save a job", x.c.HSet(ctx, x.prefix+"jobs", id, state).Err())
}

func (x *redisIndex) jobs(ctx context.Context) ([][]byte, error) {
	vals, err := x.c.HVals(ctx, x.prefix+"jobs").Result()
	if err != nil {
		return nil, x.wrap("read the jobs", err)
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = []byte(v)
	}
	return out, nil
}
