package sqlstore

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// Cleanup deletes expired records, at most Options.CleanupBatch per
// statement, until none is left or ctx ends, and returns how many it
// deleted. Each batch is its own short statement (on MySQL/MariaDB a READ
// COMMITTED transaction, so no gap locks delay new claims), and a record
// renewed by a claim meanwhile is never deleted. Expired records are also
// ignored (and reused) by [Store.Claim], so cleanup only reclaims space.
// Safe to run from many processes at once.
func (s *Store) Cleanup(ctx context.Context) (int64, error) {
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, s.wrap(ctx, "cleanup", err)
		}
		var n int64
		err := s.retry(ctx, "cleanup", func() error {
			var err error
			n, err = s.cleanupBatch(ctx)
			return err
		})
		total += n
		if err != nil {
			return total, s.wrap(ctx, "cleanup", err)
		}
		if n < int64(s.opts.CleanupBatch) {
			return total, nil
		}
	}
}

func (s *Store) cleanupBatch(ctx context.Context) (int64, error) {
	if s.dialect != MySQL {
		res, err := s.exec(ctx, s.q.cleanup, s.opts.CleanupBatch)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	}
	st, err := s.stmt(ctx, s.q.cleanup)
	if err != nil {
		return 0, err
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.StmtContext(ctx, st).ExecContext(ctx, s.opts.CleanupBatch)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	return n, tx.Commit()
}

// StartCleanup starts one goroutine that runs [Store.Cleanup] every
// Options.CleanupInterval (the first run after one interval) and logs what it
// removed. It stops when ctx ends or when the returned stop function is
// called; stop waits for the goroutine to exit (a cleanup in progress is
// cancelled) and may be called more than once.
func (s *Store) StartCleanup(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(s.opts.CleanupInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			start := time.Now()
			n, err := s.Cleanup(ctx)
			switch {
			case err != nil && ctx.Err() != nil:
				return
			case err != nil:
				s.log.WarnContext(ctx, "sqlstore: cleanup failed", "dialect", s.dialect, "table", s.table, "removed", n, "error", err)
			case n > 0:
				s.log.InfoContext(ctx, "sqlstore: removed expired records", "dialect", s.dialect, "table", s.table, "removed", n, "took", time.Since(start))
			default:
				s.log.DebugContext(ctx, "sqlstore: no expired records", "dialect", s.dialect, "table", s.table)
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}
