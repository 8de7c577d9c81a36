package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/idempo/idempo/dedup"
)

// Store is a [dedup.Store] and [dedup.TxCompleter] on a SQL database.
//
// It is safe for concurrent use by many goroutines and processes sharing the
// table. Every method is one statement or one short transaction on the
// record of its key (Claim and Complete share theirs with concurrent
// callers unless Options.DisableSharing, each row still on its own), fenced by the owner token where the record is changed,
// and every expiry is judged on the database's clock. The store starts no
// goroutine of its own ([Store.StartCleanup] starts one on request).
type Store struct {
	db      *sql.DB
	dialect Dialect
	table   string
	q       *queries
	log     *slog.Logger
	opts    Options

	mu    sync.Mutex
	stmts map[string]*sql.Stmt

	gate       inboxGate    // inbox transactions under way, for Extend
	inboxCheck atomic.Int32 // MySQL: how the inbox tells its transaction is open (inboxCheck*)

	// Sharing of round trips (nil with Options.DisableSharing).
	bq         *batchQueries
	claims     *batcher[*claimCall]
	completes  *batcher[*completeCall]
	statements atomic.Int64 // claim and completion statements sent on their fast paths (for benchmarks)
	sharing    sharingCounters
	failures   atomic.Int64 // shared statements that failed as a whole (for tests)
}

var (
	_ dedup.Store       = (*Store)(nil)
	_ dedup.TxCompleter = (*Store)(nil)
)

// New returns a store on db. opts may be nil. It does not touch the
// database: call [Store.Migrate] (or run [Schema] by hand) before the first
// claim. The caller keeps ownership of db.
func New(db *sql.DB, opts *Options) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlstore: nil *sql.DB")
	}
	o, err := opts.withDefaults(db)
	if err != nil {
		return nil, err
	}
	q, err := buildQueries(o.Dialect, o.Table)
	if err != nil {
		return nil, err
	}
	s := &Store{
		db:      db,
		dialect: o.Dialect,
		table:   o.Table,
		q:       q,
		log:     o.Logger,
		opts:    o,
		stmts:   make(map[string]*sql.Stmt),
	}
	if !o.DisableSharing {
		s.bq = &batchQueries{x: dialectSQL{d: o.Dialect, table: quoteIdent(o.Dialect, o.Table)}}
		s.claims = &batcher[*claimCall]{send: s.sendClaims}
		s.completes = &batcher[*completeCall]{send: s.sendCompletes}
	}
	return s, nil
}

// Dialect returns the store's dialect.
func (s *Store) Dialect() Dialect { return s.dialect }

// Table returns the name of the store's table.
func (s *Store) Table() string { return s.table }

// DB returns the database the store was created with.
func (s *Store) DB() *sql.DB { return s.db }

// ClaimCapacity is the database's connection limit (1 for SQLite; 0 when
// unlimited): the idempo middleware holds at most that many claims at once
// by default (middleware.Config.MaxClaims), since each may need a
// connection for the whole handler (the transactional inbox).
func (s *Store) ClaimCapacity() int { return s.db.Stats().MaxOpenConnections }

// Migrate creates the table and its expiry index if they do not exist (the
// statements of [Schema]). It is idempotent and safe to run from many
// processes at once (on PostgreSQL it holds an advisory lock while it runs).
func (s *Store) Migrate(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlstore: %s migrate: %w", s.dialect, err)
	}
	if s.dialect != Postgres {
		for _, stmt := range s.q.schema {
			if _, err := s.db.ExecContext(ctx, stmt); err != nil {
				return s.wrap(ctx, "migrate", err)
			}
		}
		return nil
	}
	// Concurrent CREATE TABLE IF NOT EXISTS can fail on PostgreSQL's
	// catalog constraints; serialise them.
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.wrap(ctx, "migrate", err)
	}
	defer func() { _ = tx.Rollback() }()
	h := fnv.New64a()
	_, _ = h.Write([]byte("idempo/sqlstore.Migrate:" + s.table))
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(h.Sum64())); err != nil {
		return s.wrap(ctx, "migrate", err)
	}
	for _, stmt := range s.q.schema {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return s.wrap(ctx, "migrate", err)
		}
	}
	return s.wrap(ctx, "migrate", tx.Commit())
}

// Close releases the statements the store prepared. It does not close the
// *sql.DB. The store must not be used afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for k, st := range s.stmts {
		errs = append(errs, st.Close())
		delete(s.stmts, k)
	}
	return errors.Join(errs...)
}

// stmt returns the prepared statement for query, preparing it on first use.
// It must not be called while the caller holds a transaction (with one
// connection in the pool, preparing would wait for it forever).
func (s *Store) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	s.mu.Lock()
	st := s.stmts[query]
	s.mu.Unlock()
	if st != nil {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.stmts[query]; old != nil {
		_ = st.Close()
		return old, nil
	}
	s.stmts[query] = st
	return st, nil
}

func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := s.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// wrap names the operation and dialect in err, and makes sure an error
// caused by a done ctx matches ctx.Err() with errors.Is.
func (s *Store) wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("sqlstore: %s %s: %w: %w", s.dialect, op, cerr, err)
	}
	return fmt.Errorf("sqlstore: %s %s: %w", s.dialect, op, err)
}

func (s *Store) leaseLost(op string, key dedup.Key) error {
	return fmt.Errorf("sqlstore: %s %s %s: %w", s.dialect, op, key, dedup.ErrLeaseLost)
}

func (s *Store) check(ctx context.Context, op string, key dedup.Key) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlstore: %s %s: %w", s.dialect, op, err)
	}
	return key.Validate()
}

// retryable reports a deadlock or serialisation failure the whole operation
// may be retried after (the database rolled the statement back).
func retryable(err error) bool {
	var my *mysql.MySQLError
	if errors.As(err, &my) {
		// ER_LOCK_DEADLOCK; ER_CHECKREAD (MariaDB's innodb_snapshot_isolation)
		return my.Number == 1213 || my.Number == 1020
	}
	var pg interface{ SQLState() string }
	if errors.As(err, &pg) {
		c := pg.SQLState()
		return c == "40001" || c == "40P01"
	}
	var lite interface{ Code() int }
	if errors.As(err, &lite) {
		c := lite.Code() & 0xff
		return c == 5 || c == 6 // SQLITE_BUSY, SQLITE_LOCKED
	}
	return false
}

const maxAttempts = 6

// retry runs fn again after a deadlock or serialisation failure, a few
// times, with a short jittered pause.
func (s *Store) retry(ctx context.Context, op string, fn func() error) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || attempt == maxAttempts || !retryable(err) || ctx.Err() != nil {
			return err
		}
		s.log.DebugContext(ctx, "sqlstore: retrying after a deadlock", "dialect", s.dialect, "op", op, "attempt", attempt, "error", err)
		pause := time.Duration(rand.Int64N(int64(time.Millisecond) << attempt))
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// row is a record as Claim reads it; the remaining times are judged by the
// database clock.
type row struct {
	state       int
	token       []byte
	deliveries  int
	fingerprint []byte
	failure     []byte
	replayID    []byte
	expiresInUS int64
	leaseInUS   int64
}

func scanRow(r *sql.Row) (row, bool, error) {
	var x row
	err := r.Scan(&x.state, &x.token, &x.deliveries, &x.fingerprint, &x.failure, &x.replayID, &x.expiresInUS, &x.leaseInUS)
	if errors.Is(err, sql.ErrNoRows) {
		return x, false, nil
	}
	return x, err == nil, err
}

// acquisition is the new content of a record a claim acquires.
type acquisition struct {
	deliveries  int
	fingerprint []byte
	replayID    []byte
}

// replayArg is the replay_id a claim carrying id stores: NULL for none.
func replayArg(id string) []byte {
	if id == "" {
		return nil
	}
	return []byte(id)
}

// decide applies the claim rules of [dedup.Store.Claim] to a record read
// under lock (or, for a first look, without one). Every acquisition, a
// retried claim's included, stores the request's fingerprint if the record
// has none and its replay ID if it carries one.
func decide(r row, req dedup.ClaimRequest) (dedup.ClaimResult, *acquisition, error) {
	if r.expiresInUS <= 0 {
		// Expired: the record is forgotten, counter included.
		return dedup.ClaimResult{Status: dedup.StatusAcquired, Deliveries: 1},
			&acquisition{deliveries: 1, fingerprint: nilIfEmpty(req.Fingerprint), replayID: replayArg(req.ReplayID)}, nil
	}
	res := dedup.ClaimResult{Deliveries: r.deliveries, Fingerprint: nilIfEmpty(r.fingerprint)}
	acq := &acquisition{deliveries: r.deliveries + 1, fingerprint: res.Fingerprint, replayID: replayArg(req.ReplayID)}
	if acq.fingerprint == nil {
		acq.fingerprint = nilIfEmpty(req.Fingerprint)
	}
	if acq.replayID == nil {
		acq.replayID = nilIfEmpty(r.replayID)
	}
	switch r.state {
	case stateDone:
		res.Status = dedup.StatusDone
		return res, nil, nil
	case stateDeadLettered:
		if req.ReplayID == "" || req.ReplayID == string(r.replayID) {
			res.Status = dedup.StatusDeadLettered
			return res, nil, nil
		}
		acq.deliveries = 1
	case stateInProgress:
		switch {
		case string(r.token) == string(req.Token):
			acq.deliveries = r.deliveries // a retried claim: renew, do not count again
		case r.leaseInUS > 0:
			res.Status = dedup.StatusInProgress
			res.LeaseRemaining = time.Duration(r.leaseInUS) * time.Microsecond
			return res, nil, nil
		}
	case stateDueForDLQ:
		res.DueForDLQ = r.failure
		if res.DueForDLQ == nil {
			res.DueForDLQ = []byte{}
		}
	case stateReleased:
	default:
		return res, nil, fmt.Errorf("record in unknown state %d", r.state)
	}
	res.Status = dedup.StatusAcquired
	res.Deliveries = acq.deliveries
	return res, acq, nil
}

// Claim implements [dedup.Store.Claim].
//
// A new key takes one INSERT. An existing key is read first; a record that
// can be acquired is then locked, read again and updated in one short
// transaction. A claim that acquires nothing changes nothing. Unless
// Options.DisableSharing, the INSERT and the read are shared with the
// claims of concurrent callers (multi-row statements, each row answered on
// its own); a key claimed twice in one such batch is answered, for the
// second caller, as a claim that came second.
func (s *Store) Claim(ctx context.Context, key dedup.Key, req dedup.ClaimRequest) (dedup.ClaimResult, error) {
	if err := s.check(ctx, "claim", key); err != nil {
		return dedup.ClaimResult{}, err
	}
	if err := req.Validate(); err != nil {
		return dedup.ClaimResult{}, err
	}
	if len(req.Token) > MaxTokenLen {
		return dedup.ClaimResult{}, fmt.Errorf("%w: Token is %d bytes, more than %d", dedup.ErrInvalidRequest, len(req.Token), MaxTokenLen)
	}
	h := key.Hash()
	start := startInsert
	if s.claims != nil {
		c := &claimCall{ctx: ctx, key: key, hash: h, req: req}
		s.claims.run(c)
		switch {
		case c.done:
			return c.res, s.wrap(ctx, "claim", c.err)
		case c.held:
			start = startLocked
		case c.exists:
			start = startRead
		}
	}
	var res dedup.ClaimResult
	err := s.retry(ctx, "claim", func() error {
		var err error
		res, err = s.claim(ctx, key, h[:], req, start)
		start = startInsert
		return err
	})
	return res, s.wrap(ctx, "claim", err)
}

// Where a claim on its own starts: a batch may have done the first steps.
const (
	startInsert = iota // from the beginning
	startRead          // the key exists: read the record
	startLocked        // the record can be acquired: lock, read, decide, update
)

// claim is a claim on its own, from start.
func (s *Store) claim(ctx context.Context, key dedup.Key, hash []byte, req dedup.ClaimRequest, start int) (dedup.ClaimResult, error) {
	if start == startLocked {
		res, found, err := s.claimLocked(ctx, hash, req)
		if err != nil || found {
			return res, err
		}
	}
	// The record may vanish (cleanup) between the steps; start over then.
	for i := range 8 {
		if i > 0 || start != startRead {
			inserted, err := s.insert(ctx, key, hash, req)
			if err != nil {
				return dedup.ClaimResult{}, err
			}
			if inserted {
				return dedup.ClaimResult{Status: dedup.StatusAcquired, Deliveries: 1}, nil
			}
		}
		st, err := s.stmt(ctx, s.q.selectRow)
		if err != nil {
			return dedup.ClaimResult{}, err
		}
		r, found, err := scanRow(st.QueryRowContext(ctx, hash))
		if err != nil {
			return dedup.ClaimResult{}, err
		}
		if !found {
			continue
		}
		res, acq, err := decide(r, req)
		if err != nil || acq == nil {
			return res, err
		}
		res, found, err = s.claimLocked(ctx, hash, req)
		if err != nil || found {
			return res, err
		}
	}
	return dedup.ClaimResult{}, errors.New("the record kept disappearing while it was claimed")
}

func (s *Store) insert(ctx context.Context, key dedup.Key, hash []byte, req dedup.ClaimRequest) (bool, error) {
	s.statements.Add(1)
	s.sharing.claim(1)
	res, err := s.exec(ctx, s.q.insert, hash, key.Scope, []byte(key.ID), []byte(req.Token),
		durArg(s.dialect, req.Lease), durArg(s.dialect, req.Retention), nilIfEmpty(req.Fingerprint), replayArg(req.ReplayID))
	if err != nil {
		var my *mysql.MySQLError
		if s.q.insertIsPlain && errors.As(err, &my) && my.Number == 1062 { // ER_DUP_ENTRY
			return false, nil
		}
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// claimLocked reads the record under a row lock (SQLite: the write lock),
// decides and updates it in one transaction. found is false when the record
// is gone.
func (s *Store) claimLocked(ctx context.Context, hash []byte, req dedup.ClaimRequest) (res dedup.ClaimResult, found bool, err error) {
	// Prepare before the transaction holds a connection.
	lockSt, err := s.stmt(ctx, s.q.lockRow)
	if err != nil {
		return res, false, err
	}
	readSt := lockSt
	if s.q.lockIsUpdate {
		if readSt, err = s.stmt(ctx, s.q.selectRow); err != nil {
			return res, false, err
		}
	}
	acqSt, err := s.stmt(ctx, s.q.acquire)
	if err != nil {
		return res, false, err
	}
	var txOpts *sql.TxOptions
	if s.dialect == Postgres {
		txOpts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	tx, err := s.db.BeginTx(ctx, txOpts)
	if err != nil {
		return res, false, err
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	if s.q.lockIsUpdate {
		if _, err = tx.StmtContext(ctx, lockSt).ExecContext(ctx, hash); err != nil {
			return res, false, err
		}
	}
	r, found, err := scanRow(tx.StmtContext(ctx, readSt).QueryRowContext(ctx, hash))
	if err != nil || !found {
		return res, found, err
	}
	res, acq, err := decide(r, req)
	if err != nil {
		return res, true, err
	}
	if acq == nil {
		return res, true, nil // nothing to change: roll back
	}
	d := s.dialect
	if _, err = tx.StmtContext(ctx, acqSt).ExecContext(ctx, []byte(req.Token), durArg(d, req.Lease), durArg(d, req.Retention),
		acq.deliveries, acq.fingerprint, acq.replayID, hash); err != nil {
		return res, true, err
	}
	committed = true
	return res, true, tx.Commit()
}

// fenced runs one UPDATE fenced by token (args hold every parameter, key
// hash and token included). When it changes no row, it checks whether token
// already left the record in one of the idempotent states (MySQL reports 0
// rows for an UPDATE that sets the values already there).
func (s *Store) fenced(ctx context.Context, op string, key dedup.Key, token dedup.Token, idempotent int, query string, args ...any) error {
	err := s.retry(ctx, op, func() error {
		s.statements.Add(1)
		res, err := s.exec(ctx, query, args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n > 0 {
			return err
		}
		return s.held(ctx, op, key, token, idempotent)
	})
	if errors.Is(err, dedup.ErrLeaseLost) {
		return err
	}
	return s.wrap(ctx, op, err)
}

// held is fenced's check after an UPDATE that changed no row: nil when
// token left the record in state idempotent, else an error wrapping
// [dedup.ErrLeaseLost] (or the database's).
func (s *Store) held(ctx context.Context, op string, key dedup.Key, token dedup.Token, idempotent int) error {
	st, err := s.stmt(ctx, s.q.heldState)
	if err != nil {
		return err
	}
	s.statements.Add(1)
	h := key.Hash()
	var state int
	switch err := st.QueryRowContext(ctx, h[:], []byte(token)).Scan(&state); {
	case errors.Is(err, sql.ErrNoRows):
		return s.leaseLost(op, key)
	case err != nil:
		return err
	case state != idempotent:
		return s.leaseLost(op, key)
	}
	return nil
}

// heldCheck is held on its own, retried like fenced.
func (s *Store) heldCheck(ctx context.Context, op string, key dedup.Key, token dedup.Token, idempotent int) error {
	err := s.retry(ctx, op, func() error { return s.held(ctx, op, key, token, idempotent) })
	if errors.Is(err, dedup.ErrLeaseLost) {
		return err
	}
	return s.wrap(ctx, op, err)
}

func hashArg(key dedup.Key) []byte {
	h := key.Hash()
	return h[:]
}

// Extend implements [dedup.Store.Extend]: one UPDATE fenced by token.
//
// While [Store.CompleteInTx] of this store has the inbox transaction of key
// and token open, Extend returns nil without a statement: that
// transaction's lock already keeps every other owner off the record (and,
// with one connection as [OpenSQLite] opens, the statement would wait for
// the transaction to end).
func (s *Store) Extend(ctx context.Context, key dedup.Key, token dedup.Token, lease time.Duration) error {
	if err := s.check(ctx, "extend", key); err != nil {
		return err
	}
	if lease <= 0 {
		return fmt.Errorf("%w: lease must be > 0, got %v", dedup.ErrInvalidRequest, lease)
	}
	h := key.Hash()
	if s.gate.beginExtend(h, token, lease) {
		return nil
	}
	defer s.gate.endExtend(h, token)
	return s.extend(ctx, key, token, lease)
}

// extend is Extend's statement.
func (s *Store) extend(ctx context.Context, key dedup.Key, token dedup.Token, lease time.Duration) error {
	d := durArg(s.dialect, lease)
	return s.fenced(ctx, "extend", key, token, stateInProgress, s.q.extend, d, d, hashArg(key), []byte(token))
}

// Complete implements [dedup.Store.Complete]: one UPDATE fenced by token,
// shared with the completions of concurrent callers unless
// Options.DisableSharing.
func (s *Store) Complete(ctx context.Context, key dedup.Key, token dedup.Token, retention time.Duration) error {
	if s.completes == nil {
		return s.finish(ctx, "complete", key, token, retention, stateDone)
	}
	const op = "complete"
	if err := s.check(ctx, op, key); err != nil {
		return err
	}
	if retention <= 0 {
		return fmt.Errorf("%w: retention must be > 0, got %v", dedup.ErrInvalidRequest, retention)
	}
	c := &completeCall{ctx: ctx, key: key, hash: key.Hash(), token: token, retention: retention}
	s.completes.run(c)
	switch {
	case c.done:
		return s.wrap(ctx, op, c.err)
	case c.check:
		return s.heldCheck(ctx, op, key, token, stateDone)
	}
	return s.finish(ctx, op, key, token, retention, stateDone)
}

// MarkDeadLettered implements [dedup.Store.MarkDeadLettered]: one UPDATE
// fenced by token.
func (s *Store) MarkDeadLettered(ctx context.Context, key dedup.Key, token dedup.Token, retention time.Duration) error {
	return s.finish(ctx, "mark dead-lettered", key, token, retention, stateDeadLettered)
}

func (s *Store) finish(ctx context.Context, op string, key dedup.Key, token dedup.Token, retention time.Duration, to int) error {
	if err := s.check(ctx, op, key); err != nil {
		return err
	}
	if retention <= 0 {
		return fmt.Errorf("%w: retention must be > 0, got %v", dedup.ErrInvalidRequest, retention)
	}
	if to == stateDone {
		s.sharing.complete(1)
	}
	return s.fenced(ctx, op, key, token, to, s.q.finish,
		to, durArg(s.dialect, retention), hashArg(key), []byte(token), to)
}

// Release implements [dedup.Store.Release]: one UPDATE fenced by token.
func (s *Store) Release(ctx context.Context, key dedup.Key, token dedup.Token, keepCount bool) error {
	if err := s.check(ctx, "release", key); err != nil {
		return err
	}
	dec := 1
	if keepCount {
		dec = 0
	}
	return s.fenced(ctx, "release", key, token, stateReleased, s.q.release, dec, hashArg(key), []byte(token))
}

// MarkDueForDLQ implements [dedup.Store.MarkDueForDLQ]: one UPDATE fenced
// by token.
func (s *Store) MarkDueForDLQ(ctx context.Context, key dedup.Key, token dedup.Token, failure []byte) error {
	if err := s.check(ctx, "mark due for the DLQ", key); err != nil {
		return err
	}
	if len(failure) > dedup.MaxFailureLen {
		return fmt.Errorf("%w: failure is %d bytes, more than %d", dedup.ErrInvalidRequest, len(failure), dedup.MaxFailureLen)
	}
	if failure == nil {
		failure = []byte{}
	}
	return s.fenced(ctx, "mark due for the DLQ", key, token, stateDueForDLQ, s.q.dueForDLQ, failure, hashArg(key), []byte(token))
}
