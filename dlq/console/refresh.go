package console

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// Counter is an optional interface of a [dlqops.Source]: how many copies a
// DLQ holds, so that a cold index shows "indexing n of N". A source without
// it shows "indexing n".
type Counter interface {
	Count(ctx context.Context, topic string) (int, error)
}

// Tailer is an optional interface of a [dlqops.Source] (dlq/kafkadlq and
// dlq/amqpdlq have it): reading a DLQ from the offset after after[partition] in each
// partition it names, so that an index pass reads only what is new.
// Without it, each pass reads the whole DLQ and skips what it indexed.
type Tailer interface {
	ReadAfter(ctx context.Context, topic string, after map[string]int64, fn func(dlqops.Entry) error) error
}

// progress is where the indexing of one DLQ stands.
type progress struct {
	Running  bool
	Read     int // copies read in this pass
	Total    int // copies the source says the DLQ holds; -1 unknown
	Done     bool
	Err      string
	LastPass time.Time
}

type progressMap struct {
	mu sync.Mutex
	m  map[string]progress
}

func (p *progressMap) get(dlq string) progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[dlq]
}

func (p *progressMap) update(dlq string, f func(*progress)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v := p.m[dlq]
	f(&v)
	p.m[dlq] = v
}

// flushEvery is how many new entries the indexer writes at once.
const flushEvery = 1000

// maxIndexedError is how much of an error text the index keeps, in bytes.
const maxIndexedError = 2000

// Refresh tails every DLQ into the index once: it reads each DLQ, adds the
// entries the index does not hold yet (metadata and group key, no payload)
// and brings the index's resolution marks up to date with the resolution
// store. Entry IDs follow dlqops' rule, so the index names entries as
// `idempo dlq` does. It returns the errors of every DLQ that failed, joined;
// the others are refreshed all the same. Safe for concurrent use; passes of
// one DLQ do not overlap (a second waits).
func (h *Handler) Refresh(ctx context.Context) error {
	var errs []error
	for _, d := range h.cfg.DLQs {
		if err := h.refreshDLQ(ctx, d); err != nil {
			errs = append(errs, fmt.Errorf("console: refresh %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// Run refreshes the index at once, then every Config.RefreshInterval,
// until ctx ends; it then returns nil. Errors of a pass are logged and
// shown on the overview; the next pass tries again.
//
// While Run runs, confirmed replays and purges run as background jobs
// under ctx (they go on when the operator leaves the page); jobs a stopped
// console left unfinished in the index are resumed. Run returns once its
// jobs have stopped.
func (h *Handler) Run(ctx context.Context) error {
	h.jobs.mu.Lock()
	h.jobs.ctx = ctx
	h.jobs.mu.Unlock()
	defer func() {
		h.jobs.mu.Lock()
		h.jobs.ctx = nil
		h.jobs.mu.Unlock()
		h.jobs.wg.Wait()
	}()
	if err := h.resumeJobs(ctx); err != nil && ctx.Err() == nil {
		h.cfg.Logger.Warn("dead-letter console: resume the jobs", "error", redact(err.Error()))
	}
	t := time.NewTicker(h.cfg.RefreshInterval)
	defer t.Stop()
	for {
		if err := h.Refresh(ctx); err != nil && ctx.Err() == nil {
			h.cfg.Logger.Warn("dead-letter console: index refresh failed", "error", redact(err.Error()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (h *Handler) refreshDLQ(ctx context.Context, dlq string) (err error) {
	lock := h.dlqLock(dlq)
	lock.Lock()
	defer lock.Unlock()
	total := -1
	if c, ok := h.cfg.Source.(Counter); ok {
		if n, cerr := c.Count(ctx, dlq); cerr == nil {
			total = n
		}
	}
	h.progress.update(dlq, func(p *progress) { p.Running, p.Read, p.Total, p.Err = true, 0, total, "" })
	defer func() {
		h.progress.update(dlq, func(p *progress) {
			p.Running = false
			if err != nil {
				p.Err = redact(err.Error())
				return
			}
			p.Done, p.LastPass = true, h.cfg.Now()
		})
	}()
	st, err := h.idx.state(ctx, dlq)
	if err != nil {
		return err
	}
	var (
		batch []row
		ends  = map[string]int64{}
	)
	flush := func() error {
		if len(batch) == 0 && len(ends) == 0 {
			return nil
		}
		if err := h.idx.add(ctx, dlq, batch, ends); err != nil {
			return err
		}
		batch, ends = batch[:0], map[string]int64{}
		return nil
	}
	read := func(ctx context.Context, fn func(dlqops.Entry) error) error { return h.cfg.Source.Read(ctx, dlq, fn) }
	n := 0
	if t, ok := h.cfg.Source.(Tailer); ok {
		after := maps.Clone(st.ends)
		read = func(ctx context.Context, fn func(dlqops.Entry) error) error { return t.ReadAfter(ctx, dlq, after, fn) }
		n = len(st.digests) // what the earlier passes read, roughly (repeats aside)
	}
	err = read(ctx, func(e dlqops.Entry) error {
		n++
		if n%100 == 0 {
			h.progress.update(dlq, func(p *progress) { p.Read = n })
		}
		part, off, positioned := splitPosition(e.Position)
		if positioned {
			if end, seen := st.ends[part]; seen && off <= end {
				return nil // indexed in an earlier pass
			}
			ends[part], st.ends[part] = off, off
		}
		var payload []byte
		if e.Message != nil {
			payload = e.Message.Payload
		}
		// The entry-ID rule of dlqops: a copy sharing an earlier copy's ID
		// with another payload is an entry of its own; with the same
		// payload it is the same entry again.
		dig := payloadDigest(payload)
		if prev, seen := st.digests[e.ID]; seen && prev != dig {
			shared := e.ID
			e.ID = dlqmeta.CollisionEntryID(shared, payload)
			e.Problems = append(e.Problems, "shares entry ID "+shared+" with an earlier copy of another payload; listed as a separate entry")
		}
		if _, seen := st.digests[e.ID]; seen {
			return nil
		}
		st.digests[e.ID] = dig
		st.seq++
		batch = append(batch, newRow(dlq, e, dig, st.seq))
		if len(batch) >= flushEvery {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	h.progress.update(dlq, func(p *progress) { p.Read = n })
	if err := flush(); err != nil {
		return err
	}
	return h.syncMarks(ctx, dlq)
}

// newRow is what the index keeps of e.
func newRow(dlq string, e dlqops.Entry, dig, seq int64) row {
	at := e.DeadLetteredAt
	if at.IsZero() {
		at = e.LastFailure
	}
	key := groupKey(e.Error)
	return row{
		DLQ: dlq, ID: e.ID, Position: e.Position, EventID: e.EventID, OriginalTopic: e.OriginalTopic,
		Handler: e.Handler, Scope: e.Scope, Reason: e.Reason, ErrorClass: e.ErrorClass,
		Error: dlqmeta.Truncate(e.Error, maxIndexedError), GroupKey: key,
		Group:    groupID(e.Reason, e.ErrorClass, e.Handler, key),
		Problems: dlqmeta.Truncate(strings.Join(e.Problems, "; "), maxIndexedError),
		At:       at.UTC(), Digest: dig, Seq: seq,
	}
}

// splitPosition splits "[PARTITION/]OFFSET" as dlqops' snapshots do.
func splitPosition(p string) (partition string, offset int64, ok bool) {
	i := strings.LastIndexByte(p, '/')
	if i >= 0 {
		partition = p[:i]
	}
	off, err := strconv.ParseInt(p[i+1:], 10, 64)
	return partition, off, err == nil && off >= 0
}

// syncMarks brings the index's resolution marks of dlq up to date with the
// resolution store: one read of each, and writes only for what changed.
func (h *Handler) syncMarks(ctx context.Context, dlq string) error {
	recs, err := h.cfg.Resolutions.Resolutions(ctx, dlq)
	if err != nil {
		return fmt.Errorf("read the resolutions: %w", err)
	}
	have, err := h.idx.marks(ctx, dlq)
	if err != nil {
		return err
	}
	changes := map[string]mark{}
	for id, r := range recs {
		m := mark{Resolution: string(r.Outcome), By: r.By}
		if r.Status == resolution.InProgress {
			m.Resolution = inProgress
		}
		if have[id] != m {
			changes[id] = m
		}
	}
	for id := range have {
		if _, ok := recs[id]; !ok {
			changes[id] = mark{}
		}
	}
	return h.idx.setMarks(ctx, dlq, changes)
}

func (h *Handler) dlqLock(dlq string) *sync.Mutex {
	h.locksMu.Lock()
	defer h.locksMu.Unlock()
	l := h.locks[dlq]
	if l == nil {
		l = &sync.Mutex{}
		h.locks[dlq] = l
	}
	return l
}
