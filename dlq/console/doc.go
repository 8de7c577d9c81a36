// Package console is the dead-letter console: a server-rendered web page,
// served by an [http.Handler], where operators see what is failing, grouped
// by reason, error class, handler and a normalised error text, and replay or
// purge entries through the same typed operations as `idempo dlq`
// (dlq/dlqops).
package console
