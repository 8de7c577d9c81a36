package redisstore

import "github.com/idempo/idempo/internal/redisscripts"

// The store's scripts; the record layout, arguments and replies are
// described in package internal/redisscripts.
var (
	claimScript   = redisscripts.Claim
	extendScript  = redisscripts.Extend
	finishScript  = redisscripts.Finish
	releaseScript = redisscripts.Release
	dueScript     = redisscripts.Due
)
