package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dedup/sqlstore"
)

const metaDemoEvent = "demo_event"

var errHandlerAfterWrite = errors.New("demo: injected failure after the effect write")

// sqlf writes a statement's '?' placeholders in the dialect's form.
func (r *OutboxWorld) sqlf(s string) string {
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

// Create creates the run's business, effect and outbox tables.
func (r *OutboxWorld) Create(ctx context.Context) error {
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

// Drop removes the run's tables; failures go to stderr.
func (r *OutboxWorld) Drop(ctx context.Context, stderr io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t := r.ob.Table()
	for _, name := range []string{r.tables.biz, r.tables.hop1, r.tables.hop2, t, t + "_leases", t + "_dead", t + "_keys"} {
		if _, err := r.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+name); err != nil {
			fmt.Fprintf(stderr, "idempo: could not drop %s: %v\n", name, err)
		}
	}
}

// produce writes the events of producer w's keys, each with its business
// row in one transaction, rolling back the planned share.
// Produce writes the events of producer w (of producers): each event's
// business row and its event in one transaction, rolling back the
// planned share. Events whose business row exists are skipped, so a
// producer killed mid-way resumes where it stopped (its open transaction
// was rolled back by the database). outsideTx breaks it on purpose: the
// event is written after the business transaction ended.
func (r *OutboxWorld) Produce(ctx context.Context, w, producers int, outsideTx bool) error {
	done, err := r.committedIDs(ctx)
	if err != nil {
		return err
	}
	topic := r.Topic1()
	insert := r.sqlf("INSERT INTO " + r.tables.biz + " (id, k, seq) VALUES (?, ?, ?)")
	for i := range r.Events {
		if (i%Keys)%producers != w || done[outboxEventID(r.RunID, i)] {
			continue
		}
		var err error
		for try := 0; try < 5; try++ {
			if err = r.produceOne(ctx, insert, topic, i, outsideTx); err == nil || ctx.Err() != nil {
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

func (r *OutboxWorld) produceOne(ctx context.Context, insert, topic string, i int, outsideTx bool) error {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	id := outboxEventID(r.RunID, i)
	if _, err := tx.ExecContext(ctx, insert, id, KeyOf(i), i/Keys); err != nil {
		return err
	}
	m := message.NewMessage(id, Payload(id, i))
	m.Metadata.Set(metaDemoEvent, id)
	SetKey(m, i)
	if !outsideTx {
		if err := r.ob.Write(ctx, tx, topic, m); err != nil {
			return err
		}
	}
	if r.rollsBack(i) {
		if err := tx.Rollback(); err != nil {
			return err
		}
	} else {
		if err := tx.Commit(); err != nil {
			return err
		}
		r.Committed.Add(1)
	}
	if outsideTx {
		return r.writeOwn(ctx, topic, m)
	}
	return nil
}

// writeOwn is the broken build's write: the event in a transaction of
// its own, after the business transaction ended (SQLite's one connection
// rules out a second transaction beside it).
func (r *OutboxWorld) writeOwn(ctx context.Context, topic string, m *message.Message) error {
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
func (r *OutboxWorld) eventIndex(id string) int {
	s, ok := strings.CutPrefix(id, "ob-"+r.RunID+"-")
	if !ok {
		return -1
	}
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 || i >= r.Events {
		return -1
	}
	return i
}

// Handler applies an event's effect at hop 1 or 2 in the inbox's
// transaction; hop 1 fails once after its effect write for a share of
// events, and returns the follow-up event (written to the outbox by the
// stack in the same transaction).
func (r *OutboxWorld) Handler(hop int) message.HandlerFunc {
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

// Counts returns how many effect rows each hop has.
func (r *OutboxWorld) Counts(ctx context.Context) (n [2]int) {
	for h, t := range []string{r.tables.hop1, r.tables.hop2} {
		_ = r.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+t).Scan(&n[h])
	}
	return n
}

// CommittedCount returns how many business rows are committed (-1 when
// the database cannot say).
func (r *OutboxWorld) CommittedCount(ctx context.Context) int {
	n := -1
	_ = r.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+r.tables.biz).Scan(&n)
	return n
}

// wait returns once both hops have an effect for every committed row, the
// outbox is drained and nothing has changed for a moment (so late
// duplicates had their chance to show), or when ctx ends (reporting true).
func (r *outboxRun) wait(ctx context.Context) bool {
	return r.Wait(ctx, func() bool { return true }, func(n [2]int) {
		if r.opts.Progress {
			fmt.Fprintf(r.opts.Stderr, "\r\033[Kcommitted %d, first hop %d, second hop %d", r.Committed.Load(), n[0], n[1])
		}
	})
}

// Wait returns once the producers are done (producersDone), both hops
// have an effect for every committed row, the outbox is drained and
// nothing has changed for a moment (so late duplicates had their chance
// to show), or when ctx ends (reporting true). progress is called on
// every check.
func (r *OutboxWorld) Wait(ctx context.Context, producersDone func() bool, progress func(n [2]int)) bool {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last [2]int
	stable := 0
	for {
		select {
		case <-ctx.Done():
			return true
		case <-tick.C:
		}
		n := r.Counts(ctx)
		committed := -1
		if producersDone() {
			committed = r.CommittedCount(ctx)
		}
		progress(n)
		if committed >= 0 && n == last && n[0] >= committed && n[1] >= committed && r.drained(ctx) {
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

func (r *OutboxWorld) drained(ctx context.Context) bool {
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
//
// It fills the fields it can judge: UniqueEvents (committed rows),
// RolledBack, Effects, FollowUpEffects, Lost, Unsettled, DoubleEffects,
// PhantomEffects and OrderViolations (when ordered).
func (r *OutboxWorld) Ledger(ctx context.Context, ordered bool) (Ledger, error) {
	ids, err := r.committedIDs(ctx)
	if err != nil {
		return Ledger{}, err
	}
	committed := make([]bool, r.Events)
	n := 0
	for id := range ids {
		if i := r.eventIndex(id); i >= 0 {
			committed[i] = true
			n++
		}
	}
	l := Ledger{UniqueEvents: n, RolledBack: r.Events - n}
	phantom, violations := 0, 0
	var counts [2][]int
	for h, t := range []string{r.tables.hop1, r.tables.hop2} {
		counts[h] = make([]int, r.Events)
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
	for i := range r.Events {
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

// committedIDs reads the IDs of the committed business rows.
func (r *OutboxWorld) committedIDs(ctx context.Context) (map[string]bool, error) {
	rows, err := r.db.QueryContext(ctx, "SELECT id FROM "+r.tables.biz)
	if err != nil {
		return nil, fmt.Errorf("read the business rows: %w", err)
	}
	defer func() { _ = rows.Close() }()
	ids := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids[id] = true
	}
	return ids, rows.Err()
}
