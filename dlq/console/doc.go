// Package console is the dead-letter console: a server-rendered web page,
// served by an [http.Handler] ([Handler]), where operators see what is
// failing and settle it through the same typed operations as `idempo dlq`
// ([dlqops.Ops]).
//
// # Pages
//
//   - The overview: unresolved entries per DLQ, grouped by reason, error
//     class, handler and group key (the error text with what varies from one
//     failure to the next — quoted values, URLs, addresses, UUIDs, times,
//     hexadecimal values, identifiers, numbers — replaced by placeholders),
//     with first and last failure times and counts of the last hour, day and
//     week; per DLQ, bar charts (inline SVG drawn by the server) of the
//     entries dead-lettered in each hour of the last day and each day of
//     the last week, resolved or not; "indexing n of N" while an index
//     pass runs (N when the source implements [Counter]).
//   - Lists per DLQ and per group: search by entry ID, event ID or error
//     text; filters by reason, error class, handler and time; pages.
//   - An entry: metadata, error, panic stack, attempts, deliveries, replays,
//     trace ID, resolution (who, when), the history of its event in the DLQ
//     (every entry of the event, oldest first, replayed or purged by whom
//     and when: a resolution is final, so an event replayed and
//     dead-lettered again has a new entry), and the payload read from the DLQ on
//     demand, shown as indented JSON, text or a hex dump
//     ([Config.HidePayloads]: only when asked for).
//   - Actions: replay (to the original topic or another) or purge one entry,
//     the checked ones or a whole group. Each is a dry run that counts what
//     would be done, a confirmation page, then the action on exactly the
//     entries the dry run counted (its dlqops snapshot), recorded in the
//     resolution store with the operator's name. While [Handler.Run] runs,
//     the action is a background job with a page showing its progress,
//     kept in the index and resumed by the next Run after a restart.
//
// The pages are plain HTML forms (html/template, embedded stylesheet, no
// script, no CDN) with labelled inputs and table headers with scopes.
//
// # The index
//
// The console answers pages from an [Index] of each DLQ: entry metadata and
// group keys, never payloads, and the last offset read in each partition.
// [Handler.Run] tails every DLQ into it from there and brings the entries'
// resolution marks up to date with the resolution store; an action updates
// the marks at once. [NewSQLIndex] keeps it in the resolution store's
// database (PostgreSQL, MySQL/MariaDB, SQLite) across restarts, and
// [NewRedisIndex] in its Redis server; [NewMemoryIndex] rebuilds it at
// each start.
//
// # Security
//
// [Config.Auth] must choose basic authentication, a bearer token, or
// Unauthenticated, which is refused unless [Config.Addr] is a loopback
// address; an unauthenticated console then answers only requests whose Host
// header names a loopback host (against DNS rebinding). Every POST must
// carry the CSRF token of the operator's pages (else 403); a read-only
// console refuses every POST. Pages send a strict Content-Security-Policy,
// hide metadata values whose keys name secrets, and show URLs without their
// passwords. A broker, store or index that fails gives a page saying so
// (503), never a stack.
//
// # Concurrency
//
// [Handler] is safe for concurrent use; so are the indexes. Index passes
// of one DLQ do not overlap.
package console
