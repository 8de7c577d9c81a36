package outbox

import (
	"context"
	"errors"
	"strings"
)

// fail records a failed publish of w: a retry after the backoff, or the
// dead table for a permanent error or the last attempt. During an outage
// the attempt is not counted and the backoff is the outage's.
func (r *Relay) fail(ctx context.Context, w row, perr error, token int64, outage bool) error {
	x := r.o.x
	f := fence([]int64{token})
	r.failures.Add(1)
	reason := perr.Error()
	if outage {
		_, err := r.o.db.ExecContext(ctx, x.expand(`UPDATE {T} SET next_attempt_at = {PLUS}, last_error = ? WHERE id = ? AND `+f),
			durArg(r.o.dialect, r.backoff(r.outages)), reason, w.id)
		r.observe(EventFailed, w.topic, 1, perr)
		return r.o.wrap("relay retry", err)
	}
	if !r.isPermanent(perr) && w.attempts+1 < r.cfg.MaxAttempts {
		_, err := r.o.db.ExecContext(ctx, x.expand(`UPDATE {T} SET attempts = attempts + 1, next_attempt_at = {PLUS}, last_error = ? WHERE id = ? AND `+f),
			durArg(r.o.dialect, r.backoff(w.attempts+1)), reason, w.id)
		r.observe(EventFailed, w.topic, 1, perr)
		return r.o.wrap("relay retry", err)
	}
	tx, err := r.o.db.BeginTx(ctx, nil)
	if err != nil {
		return r.o.wrap("relay dead", err)
	}
	defer func() { _ = tx.Rollback() }()
	const cols = `id, uuid, topic, msg_key, key_hash, bucket, payload, metadata, traceparent, created_at, attempts`
	res, err := tx.ExecContext(ctx, x.expand(`INSERT INTO {D} (`+cols+`, reason, dead_at)
SELECT `+strings.Replace(cols, "attempts", "attempts + 1", 1)+`, ?, {NOW} FROM {T} WHERE id = ? AND `+f), reason, w.id)
	if err != nil {
		return r.o.wrap("relay dead", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil // lease lost
	}
	if _, err := tx.ExecContext(ctx, x.expand(`DELETE FROM {T} WHERE id = ? AND `+f), w.id); err != nil {
		return r.o.wrap("relay dead", err)
	}
	if err := tx.Commit(); err != nil {
		return r.o.wrap("relay dead", err)
	}
	r.dead.Add(1)
	r.observe(EventDead, w.topic, 1, perr)
	r.cfg.Logger.Error("outbox relay: row moved to the dead table", perr, map[string]any{"table": r.o.table, "id": w.id, "topic": w.topic, "uuid": w.uuid})
	return nil
}

// isPermanent reports whether a publish error sends its row to the dead
// table at once.
func (r *Relay) isPermanent(err error) bool {
	var pe permanent
	return errors.As(err, &pe) || r.cfg.Permanent(err)
}
