package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"slices"
	"time"

	"github.com/idempo/idempo/dedup"
)

// Batched claims and completions (unless Options.DisableSharing).
//
// The claims of concurrent callers go out as one multi-row INSERT of the new
// records, followed, when some keys exist, by one SELECT of those records;
// the completions as one multi-row UPDATE. Each row carries its caller's own
// token, lease, retention, fingerprint and replay ID, and each caller gets
// its own result, judged by the same rules as a claim sent alone (decide).
// What one batch cannot settle for certain, each caller then does on its
// own exactly as without batching: a record that can be acquired (it
// exists, so the read-decide-write must happen under its row lock), a key
// that vanished meanwhile, a key twice in the batch whose first claim did
// not acquire, and every row of a statement that failed as a whole, so that
// a row that fails fails alone. Rows are sent in key-hash order, so two
// batches that share keys take their locks in the same order and cannot
// deadlock each other.

// claimCall is one Claim waiting for, or answered by, a batch.
type claimCall struct {
	ready chan bool
	ctx   context.Context
	key   dedup.Key
	hash  [32]byte
	req   dedup.ClaimRequest

	done   bool // res and err are the answer; else the caller claims on its own
	res    dedup.ClaimResult
	err    error
	held   bool // the record exists and can be acquired: start at the locked step
	exists bool // the key existed at the INSERT: start at the read
}

func (c *claimCall) wake() chan bool      { return c.ready }
func (c *claimCall) setWake(ch chan bool) { c.ready = ch }

// completeCall is one Complete waiting for, or answered by, a batch.
type completeCall struct {
	ready     chan bool
	ctx       context.Context
	key       dedup.Key
	hash      [32]byte
	token     dedup.Token
	retention time.Duration

	done  bool // err is the answer; else the caller completes on its own
	err   error
	check bool // the caller's own UPDATE ran and matched nothing: only check the state
}

func (c *completeCall) wake() chan bool      { return c.ready }
func (c *completeCall) setWake(ch chan bool) { c.ready = ch }

func byHash[T interface{ hashOf() *[32]byte }](a, b T) int {
	return bytes.Compare(a.hashOf()[:], b.hashOf()[:])
}

func (c *claimCall) hashOf() *[32]byte    { return &c.hash }
func (c *completeCall) hashOf() *[32]byte { return &c.hash }

// liveSorted returns the calls whose context is not done, sorted by key
// hash, answering the others with their context's error.
func liveSorted[T interface {
	hashOf() *[32]byte
	context() context.Context
	answer(err error)
}](batch []T) []T {
	live := make([]T, 0, len(batch))
	for _, c := range batch {
		if err := c.context().Err(); err != nil {
			c.answer(err)
			continue
		}
		live = append(live, c)
	}
	slices.SortStableFunc(live, byHash)
	return live
}

func (c *claimCall) context() context.Context    { return c.ctx }
func (c *claimCall) answer(err error)            { c.done, c.err = true, err }
func (c *completeCall) context() context.Context { return c.ctx }
func (c *completeCall) answer(err error)         { c.done, c.err = true, err }

// sendClaims is the claim batcher's send.
func (s *Store) sendClaims(batch []*claimCall) {
	if len(batch) == 1 {
		// Alone: the INSERT a claim sends without batching, in the
		// caller's context.
		c := batch[0]
		if err := c.ctx.Err(); err != nil {
			c.answer(err)
			return
		}
		inserted, err := s.insert(c.ctx, c.key, c.hash[:], c.req)
		switch {
		case err != nil:
		case inserted:
			c.done, c.res = true, dedup.ClaimResult{Status: dedup.StatusAcquired, Deliveries: 1}
		default:
			c.exists = true
		}
		return
	}
	live := liveSorted(batch)
	if len(live) == 0 {
		return
	}
	// A key twice in the batch: the first call is a row, the others wait
	// for its answer (twins[i] pairs with its first call).
	rows := make([]*claimCall, 0, len(live))
	var twins [][2]*claimCall
	for _, c := range live {
		if n := len(rows); n > 0 && rows[n-1].hash == c.hash {
			twins = append(twins, [2]*claimCall{c, rows[n-1]})
			continue
		}
		rows = append(rows, c)
	}
	ctxs := make([]context.Context, len(rows))
	for i, c := range rows {
		ctxs[i] = c.ctx
	}
	ctx, stop := batchContext(ctxs)
	defer stop()
	if err := s.claimRows(ctx, rows); err != nil {
		// The statement failed as a whole: every caller claims on its own.
		s.failures.Add(1)
		s.log.DebugContext(ctx, "sqlstore: a batch of claims failed; claiming each on its own", "dialect", s.dialect, "rows", len(rows), "error", err)
		for _, c := range rows {
			c.done, c.held, c.exists, c.res, c.err = false, false, false, dedup.ClaimResult{}, nil
		}
	}
	for _, tw := range twins {
		twin, first := tw[0], tw[1]
		if first.done && first.err == nil && first.res.Status == dedup.StatusAcquired && first.req.Token != twin.req.Token {
			// Exactly what the twin's claim would have found had it come
			// second on its own: the record just acquired by another token.
			fp := first.res.Fingerprint
			if fp == nil {
				fp = nilIfEmpty(first.req.Fingerprint)
			}
			twin.done = true
			twin.res = dedup.ClaimResult{
				Status:         dedup.StatusInProgress,
				Deliveries:     first.res.Deliveries,
				Fingerprint:    fp,
				LeaseRemaining: first.req.Lease,
			}
		}
		// Otherwise the twin claims on its own, after the first.
	}
}

// padArgs repeats the last row's arguments (each row is per arguments
// long) until args holds those of padded(n) rows.
func padArgs(args []any, n, per int) []any {
	last := args[len(args)-per:]
	for range padded(n) - n {
		args = append(args, last...)
	}
	return args
}

// claimRows sends the rows' INSERT and, for the keys that exist, their
// SELECT, and answers what they settle. An error means nothing was
// answered.
func (s *Store) claimRows(ctx context.Context, rows []*claimCall) error {
	n := len(rows)
	d := s.dialect
	args := make([]any, 0, 8*n)
	for _, c := range rows {
		args = append(args, c.hash[:], c.key.Scope, []byte(c.key.ID), []byte(c.req.Token),
			durArg(d, c.req.Lease), durArg(d, c.req.Retention), nilIfEmpty(c.req.Fingerprint), replayArg(c.req.ReplayID))
	}
	args = padArgs(args, n, 8)
	st, err := s.stmt(ctx, s.bq.insertN(padded(n)))
	if err != nil {
		return err
	}
	s.statements.Add(1)
	s.sharing.claim(n)
	acquired := func(c *claimCall) {
		c.done, c.res = true, dedup.ClaimResult{Status: dedup.StatusAcquired, Deliveries: 1}
	}
	var rest []*claimCall
	affected := int64(-1)
	if d == MySQL {
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			return err
		}
		if affected, err = res.RowsAffected(); err != nil {
			return err
		}
		if affected == int64(n) {
			for _, c := range rows {
				acquired(c)
			}
			return nil
		}
		rest = rows
	} else {
		inserted, err := s.insertedHashes(ctx, st, args)
		if err != nil {
			return err
		}
		for _, c := range rows {
			if inserted[c.hash] {
				acquired(c)
			} else {
				rest = append(rest, c)
			}
		}
		if len(rest) == 0 {
			return nil
		}
	}
	found, err := s.readRows(ctx, rest)
	if err != nil {
		if affected < 0 {
			// The inserts are answered; the others claim on their own.
			for _, c := range rest {
				c.done = false
			}
			return nil
		}
		return err
	}
	// MySQL: a record held in progress by the caller's own token with one
	// delivery was inserted by this batch, unless the caller's claim is a
	// retry of an earlier one with the same token. The affected-row count
	// tells: when it equals the number of such records, all are this
	// batch's; otherwise they claim on their own (a retry renews its lease).
	var own []*claimCall
	for _, c := range rest {
		r, ok := found[c.hash]
		if !ok {
			continue // vanished: the caller claims on its own
		}
		if affected >= 0 && r.state == stateInProgress && string(r.token) == string(c.req.Token) && r.deliveries == 1 {
			own = append(own, c)
			continue
		}
		res, acq, err := decide(r, c.req)
		switch {
		case err != nil:
			c.done, c.err = true, err
		case acq == nil:
			c.done, c.res = true, res
		default:
			c.held = true
		}
	}
	if int64(len(own)) == affected {
		for _, c := range own {
			acquired(c)
		}
	}
	return nil
}

// insertedHashes runs the INSERT … RETURNING key_hash of PostgreSQL and
// SQLite and returns the hashes inserted.
func (s *Store) insertedHashes(ctx context.Context, st *sql.Stmt, args []any) (map[[32]byte]bool, error) {
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rs.Close() }()
	inserted := make(map[[32]byte]bool)
	for rs.Next() {
		var h []byte
		if err := rs.Scan(&h); err != nil {
			return nil, err
		}
		inserted[[32]byte(h)] = true
	}
	return inserted, rs.Err()
}

// readRows reads the records of calls (no lock), by key hash.
func (s *Store) readRows(ctx context.Context, calls []*claimCall) (map[[32]byte]row, error) {
	st, err := s.stmt(ctx, s.bq.selectN(padded(len(calls))))
	if err != nil {
		return nil, err
	}
	args := make([]any, len(calls))
	for i, c := range calls {
		args[i] = c.hash[:]
	}
	args = padArgs(args, len(calls), 1)
	s.statements.Add(1)
	rs, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rs.Close() }()
	found := make(map[[32]byte]row, len(calls))
	for rs.Next() {
		var h []byte
		var x row
		if err := rs.Scan(&h, &x.state, &x.token, &x.deliveries, &x.fingerprint, &x.failure, &x.replayID, &x.expiresInUS, &x.leaseInUS); err != nil {
			return nil, err
		}
		if len(h) == 32 {
			found[[32]byte(h)] = x
		}
	}
	return found, rs.Err()
}

// sendCompletes is the completion batcher's send.
func (s *Store) sendCompletes(batch []*completeCall) {
	live := liveSorted(batch)
	if len(live) == 0 {
		return
	}
	rows := make([]*completeCall, 0, len(live))
	for _, c := range live {
		if n := len(rows); n > 0 && rows[n-1].hash == c.hash {
			continue // a twin completes on its own, after this batch
		}
		rows = append(rows, c)
	}
	if len(rows) == 1 {
		// Alone: the statement a Complete sends without batching, in the
		// caller's context.
		c := rows[0]
		s.statements.Add(1)
		s.sharing.complete(1)
		res, err := s.exec(c.ctx, s.q.finish, stateDone, durArg(s.dialect, c.retention), c.hash[:], []byte(c.token), stateDone)
		if err != nil {
			return // the caller completes on its own
		}
		if n, err := res.RowsAffected(); err == nil {
			c.done, c.check = n > 0, n == 0
		}
		return
	}
	ctxs := make([]context.Context, len(rows))
	for i, c := range rows {
		ctxs[i] = c.ctx
	}
	ctx, stop := batchContext(ctxs)
	defer stop()
	s.completeRows(ctx, rows)
}

// completeRows sends one UPDATE completing rows (more than one) and marks
// them done if it matched them all; else they complete on their own.
func (s *Store) completeRows(ctx context.Context, rows []*completeCall) {
	n := len(rows)
	var retentions, hashes, tokens []any
	for _, c := range rows {
		retentions = append(retentions, c.hash[:], durArg(s.dialect, c.retention))
		hashes = append(hashes, c.hash[:])
		tokens = append(tokens, c.hash[:], []byte(c.token))
	}
	args := append(append(padArgs(retentions, n, 2), padArgs(hashes, n, 1)...), padArgs(tokens, n, 2)...)
	st, err := s.stmt(ctx, s.bq.completeN(padded(n)))
	if err != nil {
		return
	}
	s.statements.Add(1)
	s.sharing.complete(n)
	res, err := st.ExecContext(ctx, args...)
	if err != nil {
		s.log.DebugContext(ctx, "sqlstore: a batch of completions failed; completing each on its own", "dialect", s.dialect, "rows", len(rows), "error", err)
		s.failures.Add(1)
		return
	}
	if n, err := res.RowsAffected(); err == nil && n == int64(len(rows)) {
		for _, c := range rows {
			c.done = true
		}
	}
	// Otherwise some record was not held by its token (or, on MySQL,
	// already had the values set): each caller completes on its own, which
	// is idempotent for the ones this statement did complete.
}
