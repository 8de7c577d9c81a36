package outbox

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempo/idempo/tracing"
)

// row is an unsent row as a relay fetches it.
type row struct {
	id          int64
	bucket      int
	hash        int64
	key, uuid   string
	topic       string
	payload     []byte
	metadata    string
	traceparent string
	attempts    int
}

// fence is the condition that the lease of the row's bucket is still held
// with one of toks.
func fence(toks []int64) string {
	return `EXISTS (SELECT 1 FROM {L} l WHERE l.bucket = {T}.bucket AND l.token IN (` + intList(toks) + `))`
}

// batch fetches the oldest due rows of the buckets in snap, publishes them
// and marks them. It returns how many rows it fetched.
func (r *Relay) batch(ctx context.Context, snap map[int]int64) (int, error) {
	buckets := make([]int, 0, len(snap))
	toks := make([]int64, 0, len(snap))
	for b, t := range snap {
		buckets = append(buckets, b)
		toks = append(toks, t)
	}
	sort.Ints(buckets)
	toks = sortedUnique(toks)
	rows, err := r.fetch(ctx, buckets)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	r.batches.Add(1)

	blocked := map[int64]bool{} // keys with a failed row in this batch
	var sent []row
	type failure struct {
		row
		err error
	}
	var failed []failure
	down := false  // the publisher looks down: stop trying this batch
	transient := 0 // keys failed with an error that is not permanent
	for start := 0; start < len(rows) && !down; {
		end := start + 1
		for end < len(rows) && rows[end].topic == rows[start].topic {
			end++
		}
		run := rows[start:end]
		start = end
		msgs, spans, ok := make([]*message.Message, 0, len(run)), make([]trace.Span, 0, len(run)), make([]row, 0, len(run))
		for _, rw := range run {
			if blocked[rw.hash] {
				continue
			}
			m, span, err := r.message(rw) //nolint:contextcheck // the span continues the writer's trace, not the relay's context
			if err != nil {
				blocked[rw.hash] = true
				failed = append(failed, failure{rw, err})
				continue
			}
			msgs, spans, ok = append(msgs, m), append(spans, span), append(ok, rw)
		}
		if len(msgs) == 0 {
			continue
		}
		err := r.cfg.Publisher.Publish(run[0].topic, msgs...)
		if err == nil {
			endSpans(spans, nil)
			sent = append(sent, ok...)
			continue
		}
		// Which of them the broker has is unknown: publish them one by one,
		// in order, stopping each key at its first failure, and the whole
		// batch when two keys failed before any publish succeeded (the
		// publisher is down: no need to wait for each row's failure).
		for i, m := range msgs {
			rw := ok[i]
			if blocked[rw.hash] || down {
				endSpans(spans[i:i+1], errSkipped)
				continue
			}
			if err := r.cfg.Publisher.Publish(rw.topic, m); err != nil {
				endSpans(spans[i:i+1], err)
				blocked[rw.hash] = true
				failed = append(failed, failure{rw, err})
				if !r.isPermanent(err) {
					transient++
				}
				down = len(sent) == 0 && transient > 1
				continue
			}
			endSpans(spans[i:i+1], nil)
			sent = append(sent, rw)
		}
	}
	// What was published is marked even when Run is being stopped: else it
	// would be published again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.Lease)
	defer cancel()
	if err := r.mark(ctx, sent, toks, snap); err != nil {
		return len(rows), err
	}
	// Every row tried failed, in several keys, none permanently: the
	// publisher (broker) is taken to be down. The rows wait a backoff that
	// grows with the outage, without counting attempts, so an outage does
	// not send every key's next row to the dead table.
	outage := len(sent) == 0 && len(failed) > 1
	keys := map[int64]bool{}
	for _, f := range failed {
		keys[f.hash] = true
		outage = outage && !r.isPermanent(f.err)
	}
	outage = outage && len(keys) > 1
	if outage {
		r.outages++
	} else if len(sent) > 0 {
		r.outages = 0
	}
	for _, f := range failed {
		if err := r.fail(ctx, f.row, f.err, snap[f.bucket], outage); err != nil {
			return len(rows), err
		}
	}
	if outage {
		return len(rows), fmt.Errorf("%w: %w", errOutage, failed[0].err)
	}
	return len(rows), nil
}

var (
	errSkipped = errors.New("outbox: not published: an earlier row of its key failed")
	errOutage  = errors.New("outbox: every row of the batch failed, in several keys: the publisher looks down")
)

func endSpans(spans []trace.Span, err error) {
	for _, s := range spans {
		if err != nil {
			s.RecordError(err)
			s.SetStatus(codes.Error, "publish failed")
		}
		s.End()
	}
}

// fetch selects the oldest unsent rows of buckets in id order, leaving out
// the keys that have a row waiting for a retry (that row is the key's
// oldest unsent one: a relay publishes a key's rows in order and stops at
// its first failure). It reads the index of unsent rows in id order, so the
// cost does not grow with the backlog.
func (r *Relay) fetch(ctx context.Context, buckets []int) ([]row, error) {
	q := r.o.x.expand(`SELECT t.id, t.bucket, t.key_hash, t.msg_key, t.uuid, t.topic, t.payload, t.metadata, t.traceparent, t.attempts
FROM {T} t
WHERE t.bucket IN (` + intList(buckets) + `) AND t.sent_at IS NULL
AND t.key_hash NOT IN (SELECT p.key_hash FROM {T} p WHERE p.attempts > 0 AND p.sent_at IS NULL AND p.next_attempt_at > {NOW})
ORDER BY t.id LIMIT ` + fmt.Sprint(r.cfg.BatchSize))
	rs, err := r.o.db.QueryContext(ctx, q)
	if err != nil {
		return nil, r.o.wrap("relay fetch", err)
	}
	defer func() { _ = rs.Close() }()
	var out []row
	for rs.Next() {
		var w row
		if err := rs.Scan(&w.id, &w.bucket, &w.hash, &w.key, &w.uuid, &w.topic, &w.payload, &w.metadata, &w.traceparent, &w.attempts); err != nil {
			return nil, r.o.wrap("relay fetch", err)
		}
		out = append(out, w)
	}
	if err := rs.Err(); err != nil {
		return nil, r.o.wrap("relay fetch", err)
	}
	return out, nil
}

// message builds the message of a row inside a producer span that
// continues the writer's trace; the span's context is in the metadata.
func (r *Relay) message(w row) (*message.Message, trace.Span, error) {
	md, err := decodeMetadata(w.metadata)
	if err != nil {
		return nil, nil, permanent{err}
	}
	parent := context.Background()
	if w.traceparent != "" {
		parent = propagation.TraceContext{}.Extract(parent, propagation.MapCarrier{"traceparent": w.traceparent})
	}
	ctx, span := r.tracer.Start(parent, w.topic+" publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.destination.name", w.topic),
			attribute.String("messaging.message.id", w.uuid),
			attribute.String("messaging.system", "watermill"),
			attribute.Int64("idempo.outbox.id", w.id),
		))
	m := message.NewMessage(w.uuid, w.payload)
	m.Metadata = md
	tracing.Inject(ctx, m)
	m.SetContext(ctx)
	return m, span, nil
}

// permanent marks an error found by the relay itself as permanent.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// mark deletes the sent rows (or sets sent_at, with a retention), fenced by
// the lease tokens: rows of a bucket whose lease was lost stay.
func (r *Relay) mark(ctx context.Context, sent []row, toks []int64, snap map[int]int64) error {
	if len(sent) == 0 {
		return nil
	}
	ids := make([]int64, len(sent))
	for i, w := range sent {
		ids[i] = w.id
	}
	q := `DELETE FROM {T} WHERE id IN (` + intList(ids) + `) AND ` + fence(toks)
	if r.cfg.Retention > 0 {
		q = `UPDATE {T} SET sent_at = {NOW} WHERE id IN (` + intList(ids) + `) AND ` + fence(toks)
	}
	res, err := r.o.db.ExecContext(ctx, r.o.x.expand(q))
	if err != nil {
		return r.o.wrap("relay mark", err)
	}
	n, _ := res.RowsAffected()
	if int(n) < len(sent) {
		r.cfg.Logger.Info("outbox relay: lease lost, rows left for the new owner", map[string]any{"table": r.o.table, "relay": r.owner, "rows": len(sent) - int(n)})
		r.dropLost(ctx, snap)
	}
	r.published.Add(n)
	counts := map[string]int{}
	var topics []string
	for _, w := range sent {
		if counts[w.topic] == 0 {
			topics = append(topics, w.topic)
		}
		counts[w.topic]++
	}
	for _, t := range topics {
		r.observe(EventPublished, t, counts[t], nil)
	}
	return nil
}
