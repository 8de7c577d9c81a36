// Package memstore is an in-memory [dedup.Store]: bounded, evicting expired
// records as it is used, with no goroutine of its own.
//
// # Guarantee level
//
// One process only: records live in this process's memory and are gone when it
// exits, so a duplicate delivered after a restart is processed again. Use it for
// tests, the demo, and consumers that run as a single instance and accept that.
//
// It passes [github.com/idempo/idempo/dedup/deduptest].
package memstore
