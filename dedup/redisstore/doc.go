// Package redisstore is a [dedup.Store] on Redis, through any go-redis v9
// [redis.UniversalClient]: a single node, Sentinel ([redis.NewFailoverClient])
// or Cluster ([redis.NewClusterClient]).
//
//	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}})
//	store, err := redisstore.New(client, nil)
//
// # Guarantee
//
// Duplicates are suppressed: one claim of a key at a time, each event done at
// most once per scope. A crash, or a lost lease, between the effect and
// [Store.Complete] can repeat that one effect. Redis must run with
// maxmemory-policy noeviction: every record has a TTL, so the volatile-*
// policies can evict live records as well as the allkeys-* ones, and an
// evicted record lets a duplicate through. [New] checks the policy once (see
// [Options.EvictionPolicyCheck]); a later change, or a node added later, is
// not seen. Redis replicates asynchronously: a failover
// to a replica can lose the most recent claims and completions, and
// duplicates of those events are then processed again.
//
// # Records
//
// Each key has one record, a Redis string under [Store.RedisKey]: the
// prefix, then the SHA-256 of [dedup.Key.Encode] in unpadded base64url inside
// braces. The braces are a Redis Cluster hash tag, so each record lives in
// one slot. The string is a MessagePack stream of seven values: state,
// token, lease_until (milliseconds by the server's TIME), deliveries, fp
// (the fingerprint, "" if none), replay (the replay ID of the last acquiring
// claim that carried one, "" if none) and failure (the due-for-DLQ note);
// its expiry (SET … PX) is the record's retention. A done record takes 184
// bytes of server memory by MEMORY USAGE with the default prefix and no
// fingerprint; plan for about 250 per record with a fingerprint, expiry
// entry included. Records written as hashes (before November 2026) are not
// read: a script meeting one fails with WRONGTYPE.
//
// # Atomicity and clocks
//
// Every method is one Lua script on one key, run with EVALSHA (and EVAL the
// first time a server meets the script, or after its script cache is
// flushed), so it is one atomic step and one round trip: a processed message
// costs two (Claim and Complete). By default the scripts of concurrent calls
// share round trips: those that arrive while a pipeline is on the wire go
// out together in the next one (see [Options].DisableSharing). Leases and retention are judged on the
// server's clock (TIME and SET … PX inside the scripts) and rounded up to
// whole milliseconds.
//
// # Errors and timeouts
//
// Keys and requests are validated before any round trip ([dedup.ErrInvalidKey],
// [dedup.ErrInvalidRequest]). A fenced call whose token no longer holds the
// record returns an error wrapping [dedup.ErrLeaseLost]. Any other failure
// (Redis down, a timeout, an error reply) is returned wrapped with %w, with
// the operation and the key in the message, and with ctx's error when ctx
// ended; such a call may or may not have taken effect. Create the client with
// ContextTimeoutEnabled: true so that context deadlines bound each call;
// otherwise go-redis waits for its own read and write timeouts.
package redisstore
