package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/dedup/sqlstore"
	"github.com/idempo/idempo/outbox"
)

// printOutboxHelp prints the help of idempo outbox.
func printOutboxHelp(w io.Writer) {
	printGroupHelp(w, "idempo outbox <status|dead|requeue> --db URL [flags]",
		`Inspects a transactional outbox (package outbox) and operates its dead rows:
the rows a relay could not publish (a permanent broker error, or too many
failed attempts) and moved to the dead table, with the reason. Later rows
of their key went on without them.

Exit status: 0 ok; 1 a given --id matched no dead row; 2 usage, setup or
database errors; 130 interrupted.`, [][2]string{
			{"status", "pending and dead rows per topic, and the age of the oldest unsent row"},
			{"dead", "list dead rows with their reason"},
			{"requeue", "move dead rows back into the outbox, after the current rows of\ntheir key, for the relays to publish again"},
		}, "Run 'idempo outbox <command> --help' for its flags.")
}

func runOutbox(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printOutboxHelp(stderr)
		return 2
	}
	var cmd command
	switch args[0] {
	case "help", "-h", "--help", "-help":
		printOutboxHelp(stdout)
		return 0
	case "status":
		cmd = &outboxStatus{}
	case "dead":
		cmd = &outboxDead{}
	case "requeue":
		cmd = &outboxRequeue{}
	default:
		fmt.Fprintf(stderr, "idempo outbox: unknown command %q\n\n", args[0])
		printOutboxHelp(stderr)
		return 2
	}
	return runCommand(ctx, cmd, args[1:], stdout, stderr)
}

// outboxTarget is a command working on an outbox: the runner opens its
// database and outbox, once, and hands them over (env.outbox, env.db).
type outboxTarget interface {
	outboxTarget() *outboxDB
}

// outboxDB holds the flags naming an outbox.
type outboxDB struct {
	db, table string
	buckets   int
	timeout   time.Duration
	spec      backend.Spec
	// migrate creates the tables when they are missing (relay --migrate).
	migrate bool
}

func (c *outboxDB) outboxTarget() *outboxDB { return c }

func (c *outboxDB) dbFlags(fs *flag.FlagSet, timeout time.Duration) {
	fs.StringVar(&c.db, "db", "", "the outbox's database: postgres://user@host:5432/db, mysql://user:pass@host:3306/db or sqlite://PATH (required)")
	fs.StringVar(&c.table, "table", outbox.DefaultTable, "the outbox table (its relays' leases are in TABLE_leases, dead rows in TABLE_dead)")
	fs.IntVar(&c.buckets, "buckets", 0, fmt.Sprintf("key buckets of the table, as it was created with; 0 means the table's own count (the package default, %d, for a table relay --migrate creates)", outbox.DefaultBuckets))
	if timeout > 0 {
		fs.DurationVar(&c.timeout, "timeout", timeout, "give up after this long")
	}
}

func (c *outboxDB) validateDB() error {
	if c.db == "" {
		return errors.New("--db required")
	}
	spec, err := backend.ParseDB(c.db)
	if err != nil {
		return err
	}
	c.spec = spec
	if err := sqlstore.ValidateTable(c.table); err != nil {
		return fmt.Errorf("--table %q: %w", c.table, err)
	}
	if c.buckets < 0 || c.buckets > outbox.MaxBuckets {
		return fmt.Errorf("--buckets must be between 0 and %d, got %d", outbox.MaxBuckets, c.buckets)
	}
	if c.timeout < 0 {
		return fmt.Errorf("--timeout must be >= 0, got %v", c.timeout)
	}
	return nil
}

// openOutbox opens the database and the outbox on it and sets e.outbox.
// Without --migrate the tables must exist. Without --buckets the outbox
// takes the bucket count the table was migrated with (a new table gets the
// package default).
func openOutbox(ctx context.Context, c *outboxDB, e *env) error {
	db, err := backend.OpenDB(ctx, c.spec, "outbox")
	if err != nil {
		return fmt.Errorf("open db %s: %w", c.spec, err)
	}
	buckets := c.buckets
	n, err := tableBuckets(ctx, db, c.table)
	if c.migrate {
		err = nil // the tables may be missing: Migrate creates them
	}
	if buckets == 0 {
		buckets = n
	}
	var ob *outbox.Outbox
	if err == nil {
		ob, err = outbox.New(db.DB, &outbox.Options{Table: c.table, Dialect: db.Dialect, Buckets: buckets})
	}
	if err == nil && c.migrate {
		err = ob.Migrate(ctx)
	}
	if err != nil {
		_ = db.DB.Close()
		return fmt.Errorf("outbox %s on %s: %w", c.table, db.Display, err)
	}
	e.outbox, e.db = ob, db
	e.close = func() { _ = db.DB.Close() }
	return nil
}

// tableBuckets returns the number of key buckets of an outbox table (the
// bucket rows of its lease table), failing with a hint when the lease table
// (which Migrate creates with the others) cannot be read, e.g. because the
// tables were never created or --table names another table.
func tableBuckets(ctx context.Context, db *backend.DB, table string) (int, error) {
	q := "`"
	if db.Dialect != sqlstore.MySQL {
		q = `"`
	}
	// table is validated by sqlstore.ValidateTable: letters, digits,
	// underscores and at most one dot.
	leases := q + strings.ReplaceAll(table+"_leases", ".", q+"."+q) + q
	var n int
	if err := db.DB.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+leases+" WHERE bucket >= 0").Scan(&n); err != nil {
		return 0, fmt.Errorf("cannot read its lease table %s_leases (are the tables created? 'idempo relay --migrate' or the statements of outbox.Outbox.Schema create them; is --table right?): %w", table, err)
	}
	return n, nil
}

// outboxStatus is idempo outbox status.
type outboxStatus struct {
	outboxDB
	jsonFlag
}

func (*outboxStatus) usage() (string, string, string) {
	return "outbox status", "idempo outbox status --db URL [--table T] [--json]", `
Shows per topic the rows not yet published (pending: due, or waiting for a
retry), the dead rows, and the age of the oldest pending row by the
database's clock.`
}

func (o *outboxStatus) flags(fs *flag.FlagSet) {
	o.dbFlags(fs, time.Minute)
	o.registerJSON(fs, "print one JSON object")
}

func (o *outboxStatus) Validate() error { return o.validateDB() }

func (o *outboxStatus) Run(ctx context.Context, e *env) (result, error) {
	sts, err := e.outbox.Status(ctx)
	if err != nil {
		return nil, err
	}
	out := &statusResult{Table: o.table, Topics: []topicStatus{}}
	for _, s := range sts {
		out.Topics = append(out.Topics, topicStatus{
			Topic: s.Topic, Pending: s.Pending, Dead: s.Dead,
			OldestPendingMS: float64(s.OldestPending.Microseconds()) / 1000,
		})
		out.Pending += s.Pending
		out.Dead += s.Dead
		out.OldestPendingMS = max(out.OldestPendingMS, float64(s.OldestPending.Microseconds())/1000)
	}
	return out, nil
}

// statusResult is the output of idempo outbox status.
type statusResult struct {
	Table string `json:"table"`
	// Pending, Dead and OldestPendingMS are over every topic.
	Pending         int64         `json:"pending"`
	Dead            int64         `json:"dead"`
	OldestPendingMS float64       `json:"oldest_pending_ms"`
	Topics          []topicStatus `json:"topics"`
}

type topicStatus struct {
	Topic           string  `json:"topic"`
	Pending         int64   `json:"pending"`
	Dead            int64   `json:"dead"`
	OldestPendingMS float64 `json:"oldest_pending_ms"`
}

func (s *statusResult) text(w io.Writer) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPENDING\tDEAD\tOLDEST PENDING")
	for _, t := range s.Topics {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", t.Topic, t.Pending, t.Dead, fmtAge(t.OldestPendingMS))
	}
	_ = tw.Flush()
	fmt.Fprintf(&b, "%s: %d pending, %d dead in %s; oldest pending %s\n",
		s.Table, s.Pending, s.Dead, plural(len(s.Topics), "topic"), fmtAge(s.OldestPendingMS))
	_, _ = io.WriteString(w, b.String())
}

// fmtAge renders an age in milliseconds ("-" for none).
func fmtAge(ms float64) string {
	if ms <= 0 {
		return "-"
	}
	d := time.Duration(ms * float64(time.Millisecond))
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

// outboxDead is idempo outbox dead.
type outboxDead struct {
	outboxDB
	jsonFlag
	topic string
	limit int
}

func (*outboxDead) usage() (string, string, string) {
	return "outbox dead", "idempo outbox dead --db URL [--topic T] [--limit N] [--json]", `
Lists dead rows, oldest first: the rows a relay moved aside because the
broker refused them for good or they failed too often, with the last
error. 'idempo outbox requeue' puts them back.`
}

func (o *outboxDead) flags(fs *flag.FlagSet) {
	o.dbFlags(fs, time.Minute)
	fs.StringVar(&o.topic, "topic", "", "only the dead rows of this topic")
	fs.IntVar(&o.limit, "limit", 100, "list at most this many rows")
	o.registerJSON(fs, "print one JSON object, payloads and metadata included")
}

func (o *outboxDead) Validate() error {
	if o.limit < 1 {
		return fmt.Errorf("--limit must be > 0, got %d", o.limit)
	}
	return o.validateDB()
}

func (o *outboxDead) Run(ctx context.Context, e *env) (result, error) {
	rows, err := e.outbox.Dead(ctx, o.topic, o.limit)
	if err != nil {
		return nil, err
	}
	out := &deadResult{Table: o.table, Topic: o.topic, Rows: []deadRow{}}
	for _, r := range rows {
		d := deadRow{
			ID: r.ID, Topic: r.Topic, Key: r.Key, UUID: r.UUID, Reason: r.Reason,
			Attempts: r.Attempts, DeadAt: r.DeadAt.UTC(), Metadata: r.Metadata,
		}
		if d.Metadata == nil {
			d.Metadata = map[string]string{}
		}
		d.Payload, d.PayloadEncoding = payloadText(r.Payload)
		out.Rows = append(out.Rows, d)
	}
	return out, nil
}

// deadResult is the output of idempo outbox dead.
type deadResult struct {
	Table string    `json:"table"`
	Topic string    `json:"topic,omitempty"`
	Rows  []deadRow `json:"rows"`
}

type deadRow struct {
	ID              int64             `json:"id"`
	Topic           string            `json:"topic"`
	Key             string            `json:"key"`
	UUID            string            `json:"uuid"`
	Reason          string            `json:"reason"`
	Attempts        int               `json:"attempts"`
	DeadAt          time.Time         `json:"dead_at"`
	Metadata        map[string]string `json:"metadata"`
	Payload         string            `json:"payload"`
	PayloadEncoding string            `json:"payload_encoding"`
}

func (d *deadResult) text(w io.Writer) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDEAD SINCE\tTOPIC\tKEY\tUUID\tATTEMPTS\tREASON")
	for _, r := range d.Rows {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", r.ID, fmtTime(r.DeadAt), r.Topic, dash(oneLine(r.Key, 40)),
			r.UUID, r.Attempts, dash(oneLine(r.Reason, 80)))
	}
	_ = tw.Flush()
	where := "in " + d.Table
	if d.Topic != "" {
		where = "of " + d.Topic + " " + where
	}
	fmt.Fprintf(&b, "%s %s\n", plural(len(d.Rows), "dead row"), where)
	_, _ = io.WriteString(w, b.String())
}

// outboxRequeue is idempo outbox requeue.
type outboxRequeue struct {
	outboxDB
	jsonFlag
	topic string
	ids   stringList
	nums  []int64
}

func (*outboxRequeue) usage() (string, string, string) {
	return "outbox requeue", "idempo outbox requeue --db URL (--topic T | --id N [--id N ...]) [--json]", `
Moves dead rows back into the outbox, in one transaction: the rows given by
--id, or every dead row of --topic. Each gets a new id after the current
rows of its key and its attempts start from zero, so the relays publish it
again (with its UUID: a consumer that has it already skips it). Fix what
made the broker refuse it first.`
}

func (o *outboxRequeue) flags(fs *flag.FlagSet) {
	o.dbFlags(fs, time.Minute)
	fs.StringVar(&o.topic, "topic", "", "requeue every dead row of this topic")
	fs.Var(&o.ids, "id", "requeue the dead row with this `ID` (repeatable)")
	o.registerJSON(fs, "print one JSON object")
}

func (o *outboxRequeue) Validate() error {
	switch {
	case o.topic == "" && len(o.ids) == 0:
		return errors.New("nothing selected: give --topic or --id")
	case o.topic != "" && len(o.ids) > 0:
		return errors.New("give --topic or --id, not both")
	}
	o.nums = o.nums[:0]
	for _, s := range o.ids {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("--id %q is not a row id (a positive integer, as idempo outbox dead lists them)", s)
		}
		o.nums = append(o.nums, n)
	}
	return o.validateDB()
}

func (o *outboxRequeue) Run(ctx context.Context, e *env) (result, error) {
	n, err := e.outbox.Requeue(ctx, o.topic, o.nums...)
	if err != nil {
		return nil, err
	}
	out := &requeueResult{Requeued: n, Table: o.table}
	if len(o.nums) > 0 && n < len(o.nums) {
		return out, fmt.Errorf("%w: %d of the %d given ids are not dead rows of %s", errNothingToDo, len(o.nums)-n, len(o.nums), o.table)
	}
	return out, nil
}

type requeueResult struct {
	Requeued int    `json:"requeued"`
	Table    string `json:"table"`
}

func (r *requeueResult) text(w io.Writer) {
	fmt.Fprintf(w, "requeued %s into %s\n", plural(r.Requeued, "row"), r.Table)
}

// plural renders "1 row", "2 rows".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
