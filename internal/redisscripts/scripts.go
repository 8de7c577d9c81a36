package redisscripts

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

// The record of one key is a Redis string: a MessagePack stream of seven
// values, in this order (cmsgpack.pack in the scripts):
//
//	state        in_progress | released | due_for_dlq | done | dead_lettered
//	token        the owner token of the last acquired claim
//	lease_until  end of the lease, in ms since the epoch by the server's TIME
//	deliveries   the delivery counter
//	fp           the first non-empty fingerprint offered by an acquiring claim ("" if none)
//	replay       the replay ID of the last acquiring claim that carried one ("" if none)
//	failure      the note left by MarkDueForDLQ (read only in state due_for_dlq; "" otherwise)
//
// The key's expiry (SET … PX) is the record's retention; Redis forgets the
// record, its counter included, when it runs out. Every script touches
// KEYS[1] only, so it runs on one node (and one slot in a cluster) as one
// atomic step. TIME is read inside the scripts: Redis 5 and later replicate
// script effects, not scripts, so a non-deterministic read before a write
// is allowed.
//
// Each redis.call costs the server about a microsecond, so the record is
// one string rather than a hash: a script reads it with one GET and writes
// it, with its expiry, with one SET (a hash needed HMGET, HSET and
// PEXPIRE). A claim of a new key is GET, TIME and SET; a completion GET and
// SET. TIME is skipped for duplicates of done records, and the commonest
// claim, of a new key, answers with a bare 1 rather than a table.

// luaGet opens the fenced scripts: the record's fields, or the reply
// 'absent' when there is none.
const luaGet = `
local k = KEYS[1]
local v = redis.call('GET', k)
if not v then return 'absent' end
local state, owner, until_ms, deliveries, fp, replay, failure = cmsgpack.unpack(v)
`

// luaHeld returns the reason and stops unless ARGV[1] holds the record in
// progress or, for idempotent repeats, in the state named by %s (a Lua
// expression).
const luaHeld = luaGet + `
if owner ~= ARGV[1] then return 'held_by_other_token' end
if state ~= 'in_progress' and state ~= %s then return state end
`

// luaNow sets now to the server's TIME in milliseconds.
const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// luaSetKeep writes the record's fields back with the expiry ttl (ms; a
// record always has one, but a key without one is written without).
const luaSetKeep = `
local rec = cmsgpack.pack(state, owner, until_ms, deliveries, fp, replay, failure)
if ttl > 0 then redis.call('SET', k, rec, 'PX', ttl) else redis.call('SET', k, rec) end
`

// Claim claims a key (KEYS[1] the record). ARGV = token, lease ms,
// retention ms, fingerprint, replay ID. Returns {status, deliveries, old
// fingerprint|nil, due note|nil, lease remaining ms}, or 1 for a new key
// acquired (status acquired, one delivery, nothing else); status uses the
// values of dedup.Status.
var Claim = redis.NewScript(`
local k = KEYS[1]
local token, lease, retention, fp, replay = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local v = redis.call('GET', k)
if not v then
` + luaNow + `
  redis.call('SET', k, cmsgpack.pack('in_progress', token, now + lease, 1, fp, replay, ''), 'PX', retention)
  return 1
end
local state, owner, until_ms, deliveries, oldfp, oldreplay, failure = cmsgpack.unpack(v)
local ofp = false
if oldfp ~= '' then ofp = oldfp end
-- Terminal states answer without reading the clock.
if state == 'done' then return {2, deliveries, ofp, false, 0} end
if state == 'dead_lettered' and (replay == '' or replay == oldreplay) then return {3, deliveries, ofp, false, 0} end
` + luaNow + `
local due, count = false, true
if state == 'dead_lettered' then
  -- A replay with a new ID: the counter restarts.
  deliveries = 0
elseif state == 'in_progress' then
  if owner == token then
    count = false -- a retried claim: renewed, not counted again
  elseif now < until_ms then
    return {4, deliveries, ofp, false, until_ms - now}
  end
elseif state == 'due_for_dlq' then
  due = failure
end
if count then deliveries = deliveries + 1 end
-- Every acquiring claim, a retried one included, stores its fingerprint
-- unless the record has one, and its replay ID if it carries one. The
-- retention is never shortened.
if oldfp == '' then oldfp = fp end
if replay ~= '' then oldreplay = replay end
local ttl = redis.call('PTTL', k)
if ttl < retention then ttl = retention end
redis.call('SET', k, cmsgpack.pack('in_progress', token, now + lease, deliveries, oldfp, oldreplay, ''), 'PX', ttl)
return {1, deliveries, ofp, due, 0}
`)

// Extend extends a lease (KEYS[1] the record). ARGV = token, lease ms.
// Returns 1, or the reason the token does not hold the record. A lease
// that outlasts the retention stretches it.
var Extend = redis.NewScript(fmt.Sprintf(luaHeld, "nil") + luaNow + `
local lease = tonumber(ARGV[2])
until_ms = now + lease
local ttl = redis.call('PTTL', k)
if ttl < lease then ttl = lease end
` + luaSetKeep + `
return 1
`)

// Finish completes or dead-letters a record (KEYS[1] the record). ARGV =
// token, retention ms, final state (done or dead_lettered). Returns 1, or
// the reason the token does not hold the record. It decodes only the state
// and the token, and writes the new state before the record's other values
// as they were (a record in progress has no failure note to clear).
var Finish = redis.NewScript(`
local k = KEYS[1]
local v = redis.call('GET', k)
if not v then return 'absent' end
local o, state = cmsgpack.unpack_one(v)
local _, owner = cmsgpack.unpack_one(v, o)
if owner ~= ARGV[1] then return 'held_by_other_token' end
if state ~= 'in_progress' and state ~= ARGV[3] then return state end
redis.call('SET', k, cmsgpack.pack(ARGV[3]) .. string.sub(v, o + 1), 'PX', ARGV[2])
return 1
`)

// Release releases a claim (KEYS[1] the record). ARGV = token, keep count
// ("1" or "0"). Returns 1, or the reason the token does not hold the
// record. The record keeps its retention.
var Release = redis.NewScript(fmt.Sprintf(luaHeld, "'released'") + `
if state == 'in_progress' then
  state = 'released'
  if ARGV[2] == '0' and deliveries > 0 then deliveries = deliveries - 1 end
  local ttl = redis.call('PTTL', k)
` + luaSetKeep + `
end
return 1
`)

// Due marks a record due for the DLQ (KEYS[1] the record). ARGV = token,
// failure note. Returns 1, or the reason the token does not hold the
// record. The record keeps its retention.
var Due = redis.NewScript(fmt.Sprintf(luaHeld, "'due_for_dlq'") + `
state, failure = 'due_for_dlq', ARGV[2]
local ttl = redis.call('PTTL', k)
` + luaSetKeep + `
return 1
`)
