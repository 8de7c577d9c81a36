// Package redisstore is a [resolution.Store] on Redis, through any go-redis
// v9 [redis.UniversalClient] (single node, Sentinel or Cluster).
//
// Each DLQ has one Redis hash, under the prefix, "dlq:" and the DLQ name in
// braces (a Cluster hash tag: one DLQ's records live in one slot); each
// field is an entry ID and holds the entry's record as JSON. Begin, Finish
// and Abort are Lua scripts, atomic on the hash, judging leases on the
// server's TIME (milliseconds). [Store.Resolutions] is one HGETALL and one
// TIME in one pipeline: one round trip, no write. Records carry no TTL: a
// DLQ's hash lives until deleted by hand (it takes roughly 150 bytes per
// resolved entry). Redis should run with maxmemory-policy noeviction, as for
// the dedup store.
package redisstore
