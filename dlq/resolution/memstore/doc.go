// Package memstore is a [resolution.Store] in memory: for tests, examples
// and single-process tools. Its records vanish with the process, so the
// idempo CLI refuses it; operators share a Redis or SQL store
// (dlq/resolution/redisstore, dlq/resolution/sqlstore).
package memstore
