package sqlstore

import (
	"strings"
	"sync"
)

// batchQueries builds, once per row count, the multi-row statements of the
// batched claims and completions (see claims.go). Rows always appear in the
// order of the batch, which is sorted by key hash.
type batchQueries struct {
	x dialectSQL

	mu       sync.Mutex
	insert   [maxBatch + 1]string
	selectIn [maxBatch + 1]string
	complete [maxBatch + 1]string
}

// cached returns slot, building it with build on first use.
func (b *batchQueries) cached(slot *string, build func() string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if *slot == "" {
		*slot = build()
	}
	return *slot
}

func repeatJoin(s string, n int) string {
	return strings.TrimSuffix(strings.Repeat(s+", ", n), ", ")
}

// insertN inserts n new records, 8 parameters a row (key hash, scope, event
// ID, token, lease µs, retention µs, fingerprint, replay ID); an existing key
// is skipped without error. PostgreSQL and SQLite return the key hashes
// inserted. MySQL and MariaDB have no RETURNING on every version and abort
// a multi-row INSERT on a duplicate key, so the statement is INSERT IGNORE
// and the caller reads the affected-row count: every value it inserts was
// validated before (key and request limits within the column sizes, valid
// UTF-8 scope), so the only error IGNORE can turn into a warning is the
// duplicate key, and a row skipped for any other reason is found absent by
// the read that follows and claimed on its own, where the error shows.
func (b *batchQueries) insertN(n int) string {
	return b.cached(&b.insert[n], func() string {
		row := `(?, ?, ?, 1, ?, {PLUS}, {PLUS}, 1, ?, ?)`
		cols := ` INTO {T} (key_hash, scope, event_id, state, token, lease_until, expires_at, deliveries, fingerprint, replay_id) VALUES ` + repeatJoin(row, n)
		if b.x.d == MySQL {
			return b.x.expand(`INSERT IGNORE` + cols)
		}
		return b.x.expand(`INSERT` + cols + ` ON CONFLICT (key_hash) DO NOTHING RETURNING key_hash`)
	})
}

// selectN reads n records by key hash (no lock), the columns of scanRow
// after the key hash.
func (b *batchQueries) selectN(n int) string {
	return b.cached(&b.selectIn[n], func() string {
		return b.x.expand(`SELECT key_hash, ` + rowCols + ` FROM {T} WHERE key_hash IN (` + repeatJoin("?", n) + `)`)
	})
}

// completeN completes n records, each fenced by its own token and given its
// own retention: parameters are n pairs (key hash, retention µs), the n key
// hashes, then n pairs (key hash, token). It matches the records held by
// their token in progress (or already done by it, an idempotent repeat);
// the affected-row count tells whether every one matched.
func (b *batchQueries) completeN(n int) string {
	return b.cached(&b.complete[n], func() string {
		bytes := "?"
		if b.x.d == Postgres {
			bytes = "CAST(? AS bytea)"
		}
		return b.x.expand(`UPDATE {T} SET state = 4, failure = NULL, expires_at = CASE key_hash ` +
			strings.Repeat(`WHEN ? THEN {PLUS} `, n) + `END
WHERE key_hash IN (` + repeatJoin("?", n) + `) AND expires_at > {NOW} AND state IN (1, 4)
AND token = CASE key_hash ` + strings.Repeat(`WHEN ? THEN `+bytes+` `, n) + `END`)
	})
}
