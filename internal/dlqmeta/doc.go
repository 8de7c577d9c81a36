// Package dlqmeta is the dead-letter metadata schema shared inside the
// module: the metadata keys a dead-letter copy carries (all but traceparent
// prefixed "idempo_"), the entry-ID rules, and the bounds on what a copy
// carries. Package dlq writes copies with it, the broker presets set the
// position keys, the middleware reads the replay and malformed markers, and
// package dlq/dlqops parses copies into typed entries, so users never need
// the keys themselves: docs/dlq.md documents the header names.
package dlqmeta
