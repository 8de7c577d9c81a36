// Package redisscripts holds the Lua scripts of the Redis dedup store
// (package dedup/redisstore), so that the benchmark's floor (idempo bench)
// can send the very same scripts through a bare go-redis client. The
// record layout, the scripts' arguments and their replies are described
// beside the scripts; the store is their only user besides the benchmark.
package redisscripts
