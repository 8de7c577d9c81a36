package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/dlq/resolution/internal/check"
)

// Options configures a [Store]. A nil *Options means all defaults.
type Options struct {
	// Prefix starts every key the store writes; it must not contain '{' or
	// '}'. Defaults to "idempo:" (an empty string means the default).
	Prefix string
}

// Store is a [resolution.Store] on Redis. It is safe for concurrent use;
// it holds no state but the client.
type Store struct {
	client redis.UniversalClient
	prefix string
}

var _ resolution.Store = (*Store)(nil)

// New returns a store on client. It does not contact the server.
func New(client redis.UniversalClient, opts *Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("redisstore: nil client (pass a go-redis client, e.g. redis.NewClient)")
	}
	prefix := "idempo:"
	if opts != nil && opts.Prefix != "" {
		prefix = opts.Prefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("redisstore: Options.Prefix %q must not contain '{' or '}' (they would break the Redis Cluster hash tag)", prefix)
	}
	return &Store{client: client, prefix: prefix}, nil
}

// Key returns the Redis key of the hash holding dlq's records.
func (s *Store) Key(dlq string) string { return s.prefix + "dlq:{" + dlq + "}" }

// rec is a record as stored: s is "h" (held) or "r" (resolved); times are
// milliseconds by the server's TIME.
type rec struct {
	S  string `json:"s"`
	T  string `json:"t"`
	By string `json:"by"`
	A  int64  `json:"a"`
	U  int64  `json:"u,omitempty"`
	O  string `json:"o,omitempty"`
}

func (r rec) record() resolution.Record {
	out := resolution.Record{Status: resolution.InProgress, By: r.By, At: time.UnixMilli(r.A)}
	if r.S == "r" {
		out.Status, out.Outcome = resolution.Resolved, resolution.Outcome(r.O)
	} else {
		out.LeaseUntil = time.UnixMilli(r.U)
	}
	return out
}

const nowLua = `local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// begin: KEYS[1] the hash; ARGV entry ID, token, by, lease ms.
var beginScript = redis.NewScript(nowLua + `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local r = cjson.decode(v)
  if r.s == 'r' then return {'resolved', v} end
  if tonumber(r.u) > now then return {'held', v} end
end
local n = cjson.encode({s = 'h', t = ARGV[2], by = ARGV[3], a = now, u = now + tonumber(ARGV[4])})
redis.call('HSET', KEYS[1], ARGV[1], n)
return {'acquired', n}
`)

// finish: ARGV entry ID, token, outcome.
var finishScript = redis.NewScript(nowLua + `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {'lost', ''} end
local r = cjson.decode(v)
if r.t ~= ARGV[2] then return {'lost', v} end
if r.s == 'r' then return {'ok', v} end
local n = cjson.encode({s = 'r', t = r.t, by = r.by, a = now, o = ARGV[3]})
redis.call('HSET', KEYS[1], ARGV[1], n)
return {'ok', n}
`)

// abort: ARGV entry ID, token.
var abortScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local r = cjson.decode(v)
if r.s == 'h' and r.t == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
`)

func (s *Store) run(ctx context.Context, sc *redis.Script, op string, k resolution.Key, args ...any) (string, rec, error) {
	res, err := sc.Run(ctx, s.client, []string{s.Key(k.DLQ)}, append([]any{k.EntryID}, args...)...).StringSlice()
	if err != nil {
		return "", rec{}, fmt.Errorf("redisstore: %s %s/%s: %w", op, k.DLQ, k.EntryID, err)
	}
	if len(res) != 2 {
		return "", rec{}, fmt.Errorf("redisstore: %s %s/%s: unexpected answer %q", op, k.DLQ, k.EntryID, res)
	}
	var r rec
	if res[1] != "" {
		if err := json.Unmarshal([]byte(res[1]), &r); err != nil {
			return "", rec{}, fmt.Errorf("redisstore: %s %s/%s: malformed record %q: %w", op, k.DLQ, k.EntryID, res[1], err)
		}
	}
	return res[0], r, nil
}

// Begin implements [resolution.Store.Begin].
func (s *Store) Begin(ctx context.Context, k resolution.Key, by string, lease time.Duration) (resolution.Begun, error) {
	if err := check.Begin(k, by, lease); err != nil {
		return resolution.Begun{}, err
	}
	token := check.NewToken()
	st, r, err := s.run(ctx, beginScript, "begin", k, token, by, max(lease.Milliseconds(), 1))
	if err != nil {
		return resolution.Begun{}, err
	}
	switch st {
	case "acquired":
		return resolution.Begun{Status: resolution.Acquired, Token: token, Record: r.record()}, nil
	case "held":
		return resolution.Begun{Status: resolution.InProgress, Record: r.record()}, nil
	default:
		return resolution.Begun{Status: resolution.Resolved, Record: r.record()}, nil
	}
}

// Finish implements [resolution.Store.Finish].
func (s *Store) Finish(ctx context.Context, k resolution.Key, token string, outcome resolution.Outcome) (resolution.Record, error) {
	if err := check.Finish(k, token, outcome); err != nil {
		return resolution.Record{}, err
	}
	st, r, err := s.run(ctx, finishScript, "finish", k, token, string(outcome))
	if err != nil {
		return resolution.Record{}, err
	}
	if st != "ok" {
		return resolution.Record{}, fmt.Errorf("%w: %s/%s", resolution.ErrLeaseLost, k.DLQ, k.EntryID)
	}
	return r.record(), nil
}

// Abort implements [resolution.Store.Abort].
func (s *Store) Abort(ctx context.Context, k resolution.Key, token string) error {
	if err := check.Token(k, token); err != nil {
		return err
	}
	if err := abortScript.Run(ctx, s.client, []string{s.Key(k.DLQ)}, k.EntryID, token).Err(); err != nil {
		return fmt.Errorf("redisstore: abort %s/%s: %w", k.DLQ, k.EntryID, err)
	}
	return nil
}

// Resolutions implements [resolution.Store.Resolutions]: HGETALL and TIME
// in one pipeline.
func (s *Store) Resolutions(ctx context.Context, dlq string) (map[string]resolution.Record, error) {
	if err := check.DLQ(dlq); err != nil {
		return nil, err
	}
	var (
		all *redis.MapStringStringCmd
		now *redis.TimeCmd
	)
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		all = p.HGetAll(ctx, s.Key(dlq))
		now = p.Time(ctx)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: resolutions of %s: %w", dlq, err)
	}
	nowMs := now.Val().UnixMilli()
	out := make(map[string]resolution.Record, len(all.Val()))
	for id, v := range all.Val() {
		var r rec
		if err := json.Unmarshal([]byte(v), &r); err != nil {
			return nil, fmt.Errorf("redisstore: resolutions of %s: malformed record of %q: %w", dlq, id, err)
		}
		if r.S == "h" && r.U <= nowMs {
			continue // the hold ran out: unresolved
		}
		out[id] = r.record()
	}
	return out, nil
}
