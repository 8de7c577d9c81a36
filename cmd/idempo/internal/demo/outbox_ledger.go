package demo

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dedup/sqlstore"
)

const metaDemoEvent = "demo_event"

var errHandlerAfterWrite = errors.New("demo: injected failure after the effect write")

// sqlf writes a statement's '?' placeholders in the dialect's form.
func (r *outboxRun) sqlf(s string) string {
	if r.dialect != sqlstore.Postgres {
		return s
	}
	var b strings.Builder
	n := 0
	for _, c := range s {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func (r *outboxRun) createTables(ctx context.Context) error {
	serial := "BIGSERIAL PRIMARY KEY"
	switch r.dialect {
	case sqlstore.MySQL:
		serial = "BIGINT AUTO_INCREMENT PRIMARY KEY"
	case sqlstore.SQLite:
		serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
	}
	stmts := []string{
		"CREATE TABLE " + r.tables.biz + " (id VARCHAR(64) NOT NULL PRIMARY KEY, k VARCHAR(32) NOT NULL, seq INT NOT NULL)",
		"CREATE TABLE " + r.tables.hop1 + " (n " + serial + ", event_id VARCHAR(64) NOT NULL, k VARCHAR(32) NOT NULL, seq INT NOT NULL)",
		"CREATE TABLE " + r.tables.hop2 + " (n " + serial + ", event_id VARCHAR(64) NOT NULL, k VARCHAR(32) NOT NULL, seq INT NOT NULL)",
	}
	for _, s := range stmts {
		if _, err := r.db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("create the demo's tables: %w", err)
		}
	}
	return r.ob.Migrate(ctx)
}

func (r *outboxRun) dropTables(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t := r.ob.Table()
	for _, name := range []string{r.tables.biz, r.tables.hop1, r.tables.hop2, t, t + "_leases", t + "_dead", t + "_keys"} {
		if _, err := r.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+name); err != nil {
			fmt.Fprintf(r.opts.Stderr, "idempo demo: could not drop %s: %v\n", name, err)
		}
	}
}

// produce writes the events of producer w's keys, each with its business
// row in one transaction, rolling back the planned share.
func (r *outboxRun) produce(ctx context.Context, w int, topic string) error {
	insert := r.sqlf("INSERT INTO " + r.tables.biz + " (id, k, seq) VALUES (?, ?, ?)")
	for i := range r.opts.Events {
		if (i%Keys)%outboxProducers != w {
			continue
		}
		var err error
		for try := 0; try < 5; try++ {
			if err = r.produceOne(ctx, insert, topic, i); err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(time.Duration(try+1) * 10 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("producer %d, event %d: %w", w, i, err)
		}
	}
	return nil
}

func (r *outboxRun) produceOne(ctx context.Context, insert, topic string, i int) error {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	id := outboxEventID(r.opts.RunID, i)
	if _, err := tx.ExecContext(ctx, insert, id, KeyOf(i), i/Keys); err != nil {
		return err
	}
	m := message.NewMessage(id, Payload(id, i))
	m.Metadata.Set(metaDemoEvent, id)
	SetKey(m, i)
	if !r.opts.OutboxOutsideTx {
		if err := r.ob.Write(ctx, tx, topic, m); err != nil {
			return err
		}
	}
	if r.rollback[i] {
		if err := tx.Rollback(); err != nil {
			return err
		}
		r.rolledBack.Add(1)
	} else {
		if err := tx.Commit(); err != nil {
			return err
		}
		r.committed.Add(1)
	}
	if r.opts.OutboxOutsideTx {
		return r.writeOwn(ctx, topic, m)
	}
	return nil
}

// writeOwn is the broken build's write: the event in a transaction of
// its own, after the business transaction ended (SQLite's one connection
// rules out a second transaction beside it).
func (r *outboxRun) writeOwn(ctx context.Context, topic string, m *message.Message) error {
	own, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := r.ob.Write(ctx, own, topic, m); err != nil {
		_ = own.Rollback()
		return err
	}
	return own.Commit()
}

// eventIndex is the index of a run's event ID, or -1.
func (r *outboxRun) eventIndex(id string) int {
	s, ok := strings.CutPrefix(id, "ob-"+r.opts.RunID+"-")
	if !ok {
		return -1
	}
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 || i >= r.opts.Events {
		return -1
	}
	return i
}

// handler applies an event's effect at hop 1 or 2 in the inbox's
// transaction; hop 1 also returns the follow-up event (written to the
// outbox by the stack in the same transaction).
func (r *outboxRun) handler(hop int) message.HandlerFunc {
	table := r.tables.hop1
	if hop == 2 {
		table = r.tables.hop2
	}
	insert := r.sqlf("INSERT INTO " + table + " (event_id, k, seq) VALUES (?, ?, ?)")
	return func(msg *message.Message) ([]*message.Message, error) {
		id := msg.Metadata.Get(metaDemoEvent)
		i := r.eventIndex(id)
		if i < 0 {
			return nil, fmt.Errorf("demo: message %s names no event of this run (%q)", msg.UUID, id)
		}
		tx, ok := sqlstore.TxFromContext(msg.Context())
		if !ok {
			return nil, errors.New("demo: no inbox transaction in the handler's context")
		}
		if _, err := tx.ExecContext(msg.Context(), insert, id, KeyOf(i), i/Keys); err != nil {
			return nil, err
		}
		if hop == 2 {
			return nil, nil
		}
		if chance("fail"+id, outboxFailPct) && r.failOnce[i].CompareAndSwap(false, true) {
			return nil, errHandlerAfterWrite
		}
		out := message.NewMessage("", Payload(id, i))
		out.Metadata.Set(metaDemoEvent, id)
		SetKey(out, i)
		return []*message.Message{out}, nil
	}
}

// wait returns once both hops have an effect for every committed row, the
// outbox is drained and nothing has changed for a moment (so late
// duplicates had their chance to show), or when ctx ends (reporting true).
func (r *outboxRun) wait(ctx context.Context) bool {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last [2]int
	stable := 0
	for {
		select {
		case <-ctx.Done():
			return true
		case <-tick.C:
		}
		var n [2]int
		for h, t := range []string{r.tables.hop1, r.tables.hop2} {
			if err := r.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+t).Scan(&n[h]); err != nil {
				continue
			}
		}
		committed := int(r.committed.Load())
		if r.opts.Progress {
			fmt.Fprintf(r.opts.Stderr, "\r\033[Kcommitted %d, first hop %d, second hop %d", committed, n[0], n[1])
		}
		if n == last && n[0] >= committed && n[1] >= committed && r.drained(ctx) {
			stable++
		} else {
			stable = 0
		}
		last = n
		if stable >= 3 {
			return false
		}
	}
}

func (r *outboxRun) drained(ctx context.Context) bool {
	st, err := r.ob.Status(ctx)
	if err != nil {
		return false
	}
	for _, s := range st {
		if s.Pending > 0 {
			return false
		}
	}
	return true
}

// ledger judges the run from the database: every committed row has one
// effect at each hop, no rolled-back row has any, and each key's effects
// follow its commit order (where the broker keeps order).
func (r *outboxRun) ledger(ctx context.Context, ordered bool) (Ledger, error) {
	committed := make([]bool, r.opts.Events)
	rows, err := r.db.QueryContext(ctx, "SELECT id FROM "+r.tables.biz)
	if err != nil {
		return Ledger{}, err
	}
	n := 0
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			_ = rows.Close()
			return Ledger{}, err
		}
		if i := r.eventIndex(id); i >= 0 {
			committed[i] = true
			n++
		}
	}
	_ = rows.Close()
	l := Ledger{UniqueEvents: n, RolledBack: r.opts.Events - n, Published: int(r.published.Load()), RelayRepublished: r.republished.Load()}
	phantom, violations := 0, 0
	var counts [2][]int
	for h, t := range []string{r.tables.hop1, r.tables.hop2} {
		counts[h] = make([]int, r.opts.Events)
		lastSeq := map[string]int{}
		rows, err := r.db.QueryContext(ctx, "SELECT event_id, k, seq FROM "+t+" ORDER BY n")
		if err != nil {
			return Ledger{}, err
		}
		for rows.Next() {
			var id, k string
			var seq int
			if err := rows.Scan(&id, &k, &seq); err != nil {
				_ = rows.Close()
				return Ledger{}, err
			}
			i := r.eventIndex(id)
			if i < 0 || !committed[i] {
				phantom++
				continue
			}
			counts[h][i]++
			if last, ok := lastSeq[k]; ok && seq < last {
				violations++
			}
			if seq > lastSeq[k] {
				lastSeq[k] = seq
			}
		}
		_ = rows.Close()
	}
	for i := range r.opts.Events {
		if !committed[i] {
			continue
		}
		c1, c2 := counts[0][i], counts[1][i]
		if c1 > 0 {
			l.Effects++
		}
		if c2 > 0 {
			l.FollowUpEffects++
		}
		if c1 == 0 || c2 == 0 {
			l.Lost++
			l.Unsettled++
		}
		if c1 > 1 || c2 > 1 {
			l.DoubleEffects++
		}
	}
	l.PhantomEffects = &phantom
	if ordered {
		l.OrderViolations = &violations
	}
	return l, nil
}
