package outbox

import (
	"context"
	"database/sql/driver"
	"errors"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/jackc/pgx/v5/stdlib"
)

var errNotPgx = errors.New("outbox: RelayConfig.Notify needs the pgx stdlib driver (github.com/jackc/pgx/v5/stdlib); polling only")

// listen wakes the relay on the writers' notifications (PostgreSQL),
// reconnecting after a second when its connection fails.
func (r *Relay) listen(ctx context.Context) {
	for ctx.Err() == nil {
		err := r.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		r.cfg.Logger.Error("outbox relay: LISTEN failed, polling meanwhile", err, watermill.LogFields{"table": r.o.table})
		if errors.Is(err, errNotPgx) {
			return
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

func (r *Relay) listenOnce(ctx context.Context) error {
	conn, err := r.o.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	err = conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return errNotPgx
		}
		pc := sc.Conn()
		if _, err := pc.Exec(ctx, `LISTEN "`+r.o.n.channel+`"`); err != nil {
			return errors.Join(err, driver.ErrBadConn)
		}
		r.signal() // rows written before LISTEN
		for {
			if _, err := pc.WaitForNotification(ctx); err != nil {
				// The connection keeps listening: never give it back.
				return errors.Join(err, driver.ErrBadConn)
			}
			r.signal()
		}
	})
	return err
}
