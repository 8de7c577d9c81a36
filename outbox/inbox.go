package outbox

import (
	"context"
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dedup/sqlstore"
)

// ErrNoInboxTx is returned by [Outbox.WriteInTx] when ctx carries no
// transaction of the SQL transactional inbox.
var ErrNoInboxTx = errors.New("outbox: the context carries no transactional inbox transaction (middleware.Config.Outbox needs Transactional with a dedup/sqlstore store)")

// WriteInTx is [Outbox.Write] in the transaction of the transactional inbox
// that ctx carries (dedup/sqlstore's TxFromContext), so it is the
// middleware's [github.com/idempo/idempo/middleware.TxOutbox]: set an
// Outbox as middleware.Config.Outbox and a handler's returned messages are
// written with its effect and its completion, in one commit. The outbox and
// the inbox store must be on the same database. Safe for concurrent use.
func (o *Outbox) WriteInTx(ctx context.Context, topic string, msgs ...*message.Message) error {
	tx, ok := sqlstore.TxFromContext(ctx)
	if !ok {
		return ErrNoInboxTx
	}
	return o.Write(ctx, tx, topic, msgs...)
}
