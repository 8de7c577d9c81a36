package outbox

import "context"

// cleanup deletes sent rows older than the retention, 1000 at a time.
func (r *Relay) cleanup(ctx context.Context, logErr func(string, error)) {
	q := `DELETE FROM {T} WHERE id IN (SELECT id FROM {T} WHERE sent_at < {PLUS} ORDER BY sent_at LIMIT 1000)`
	if r.o.dialect == "mysql" {
		q = `DELETE FROM {T} WHERE sent_at < {PLUS} ORDER BY sent_at LIMIT 1000`
	}
	q = r.o.x.expand(q)
	for ctx.Err() == nil {
		res, err := r.o.db.ExecContext(ctx, q, durArg(r.o.dialect, -r.cfg.Retention))
		if err != nil {
			logErr("deleting sent rows failed", err)
			return
		}
		if n, _ := res.RowsAffected(); n < 1000 {
			return
		}
	}
}
