package redisscripts

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

// The record of one key is a hash with these fields:
//
//	state        in_progress | released | due_for_dlq | done | dead_lettered
//	token        the owner token of the last acquired claim
//	lease_until  end of the lease, in ms since the epoch by the server's TIME
//	deliveries   the delivery counter
//	fp           the first non-empty fingerprint offered by an acquiring claim (absent if none)
//	failure      the note left by MarkDueForDLQ (only in state due_for_dlq)
//	replay       the replay ID of the last acquiring claim that carried one (absent if none)
//
// The key's PEXPIRE is the record's retention; Redis forgets the record, its
// counter included, when it runs out. Every script touches KEYS[1] only, so it
// runs on one node (and one slot in a cluster) as one atomic step. TIME is
// read inside the scripts: Redis 5 and later replicate script effects, not
// scripts, so a non-deterministic read before a write is allowed.
//
// Each redis.call costs the server about a microsecond and each field a
// fraction of one, so the scripts make the fewest calls the record needs and
// read no field they do not use: TIME is skipped for duplicates of done
// records, the failure note is read only in state due_for_dlq, helpers are
// inlined (a closure per call costs measurable server time), and the
// commonest claim, of a new key, answers with a bare 1 rather than a table.

// luaPrelude opens every script.
const luaPrelude = `
local k = KEYS[1]
`

// luaNow sets now to the server's TIME in milliseconds.
const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// luaHeld returns the reason and stops unless ARGV[1] holds the record in
// progress or, for idempotent repeats, in the state named by %s (a Lua
// expression); st is the state found.
const luaHeld = `
local h = redis.call('HMGET', k, 'state', 'token')
local st = h[1]
if not st then return 'absent' end
if h[2] ~= ARGV[1] then return 'held_by_other_token' end
if st ~= 'in_progress' and st ~= %s then return st end
`

// Claim claims a key (KEYS[1] the record). ARGV = token, lease ms, retention ms, fingerprint, replay ID.
// Returns {status, deliveries, old fingerprint|nil, due note|nil, lease remaining ms},
// or 1 for a new key acquired (status acquired, one delivery, nothing else);
// status uses the values of dedup.Status.
var Claim = redis.NewScript(luaPrelude + `
local token, lease, retention, fp, replay = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local r = redis.call('HMGET', k, 'state', 'token', 'lease_until', 'deliveries', 'fp', 'replay')
local state, oldfp, deliveries = r[1], r[5], tonumber(r[4]) or 0
-- Terminal states answer without reading the clock.
if state == 'done' then return {2, deliveries, oldfp, false, 0} end
if state == 'dead_lettered' and (replay == '' or replay == r[6]) then return {3, deliveries, oldfp, false, 0} end
` + luaNow + `
local due, count = false, true
if not state or state == 'dead_lettered' then
  -- A new record, or a replay with a new ID: the counter (re)starts.
  deliveries = 0
elseif state == 'in_progress' then
  if r[2] == token then
    count = false -- a retried claim: renewed, not counted again
  else
    local until_ms = tonumber(r[3])
    if now < until_ms then return {4, deliveries, oldfp, false, until_ms - now} end
  end
elseif state == 'due_for_dlq' then
  due = redis.call('HGET', k, 'failure') or ''
end
if count then deliveries = deliveries + 1 end
-- Every acquiring claim, a retried one included, stores its fingerprint
-- unless the record has one, and its replay ID if it carries one.
local set = {'state', 'in_progress', 'token', token, 'lease_until', now + lease, 'deliveries', deliveries}
if fp ~= '' and not oldfp then set[#set + 1] = 'fp'; set[#set + 1] = fp end
if replay ~= '' then set[#set + 1] = 'replay'; set[#set + 1] = replay end
redis.call('HSET', k, unpack(set))
if not state then
  redis.call('PEXPIRE', k, retention)
  return 1
end
if due then redis.call('HDEL', k, 'failure') end
if redis.call('PTTL', k) < retention then redis.call('PEXPIRE', k, retention) end
return {1, deliveries, oldfp, due, 0}
`)

// Extend extends a lease (KEYS[1] the record). ARGV = token, lease ms. Returns 1, or the reason the token
// does not hold the record.
var Extend = redis.NewScript(luaPrelude + fmt.Sprintf(luaHeld, "nil") + luaNow + `
local lease = tonumber(ARGV[2])
redis.call('HSET', k, 'lease_until', now + lease)
if redis.call('PTTL', k) < lease then redis.call('PEXPIRE', k, lease) end
return 1
`)

// Finish completes or dead-letters a record (KEYS[1] the record). ARGV = token, retention ms, final state (done or
// dead_lettered). Returns 1, or the reason the token does not hold the record.
var Finish = redis.NewScript(luaPrelude + fmt.Sprintf(luaHeld, "ARGV[3]") + `
-- No failure note to clear: a record in progress never has one.
redis.call('HSET', k, 'state', ARGV[3])
redis.call('PEXPIRE', k, ARGV[2])
return 1
`)

// Release releases a claim (KEYS[1] the record). ARGV = token, keep count ("1" or "0"). Returns 1, or the
// reason the token does not hold the record.
var Release = redis.NewScript(luaPrelude + fmt.Sprintf(luaHeld, "'released'") + `
if st == 'in_progress' then
  redis.call('HSET', k, 'state', 'released')
  if ARGV[2] == '0' and (tonumber(redis.call('HGET', k, 'deliveries')) or 0) > 0 then
    redis.call('HINCRBY', k, 'deliveries', -1)
  end
end
return 1
`)

// Due marks a record due for the DLQ (KEYS[1] the record). ARGV = token, failure note. Returns 1, or the reason the token
// does not hold the record.
var Due = redis.NewScript(luaPrelude + fmt.Sprintf(luaHeld, "'due_for_dlq'") + `
redis.call('HSET', k, 'state', 'due_for_dlq', 'failure', ARGV[2])
return 1
`)
