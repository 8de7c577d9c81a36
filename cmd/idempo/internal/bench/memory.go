package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/memstore"
	"github.com/idempo/idempo/dedup/redisstore"
	"github.com/idempo/idempo/dedup/sqlstore"
)

// Caps on the records written to a server store for its memory figure.
const (
	redisMemoryKeys = 1000
	sqlMemoryKeys   = 10000
)

// MemoryResult is what the store keeps per key. The JSON field names are
// stable.
type MemoryResult struct {
	// Store is the store's kind: memory, redis, postgres, mysql or sqlite.
	Store string `json:"store"`
	// State is the state of the measured records: "in_progress" (claimed,
	// never completed: the in-memory store's worst case, records held
	// while handlers run) or "done".
	State string `json:"state"`
	// Keys is how many records were measured.
	Keys int `json:"keys"`
	// Method says how the bytes were counted.
	Method string `json:"method"`
	// TotalBytes is what the measured records take together.
	TotalBytes int64 `json:"total_bytes"`
	// BytesPerKey is TotalBytes / Keys.
	BytesPerKey float64 `json:"bytes_per_key"`
	// MiBPer100kKeys is BytesPerKey × 100000 in MiB.
	MiBPer100kKeys float64 `json:"mib_per_100k_keys"`
	// PeakRSSBytes is the process's peak resident set (VmHWM) after the
	// measurement, for the in-memory store on Linux: the whole process,
	// the benchmark rounds included, not the store alone.
	PeakRSSBytes int64 `json:"peak_rss_bytes,omitempty"`
}

func newMemoryResult(store, state, method string, keys int, total int64) *MemoryResult {
	per := float64(total) / float64(keys)
	return &MemoryResult{
		Store: store, State: state, Keys: keys, Method: method, TotalBytes: total,
		BytesPerKey: per, MiBPer100kKeys: per * 1e5 / (1 << 20),
	}
}

// memory measures the store of the run.
func (r *runner) memory(ctx context.Context) (*MemoryResult, error) {
	switch st := r.store.Store.(type) {
	case *memstore.Store:
		return memstoreMemory(ctx, r.opts.MemoryKeys)
	case *redisstore.Store:
		return redisMemory(ctx, st, r.clean, r.opts.RunID, min(r.opts.MemoryKeys, redisMemoryKeys))
	case *sqlstore.Store:
		return sqlMemory(ctx, st, r.opts.RunID, min(r.opts.MemoryKeys, sqlMemoryKeys))
	default:
		return nil, fmt.Errorf("no memory figure for a %T store", st)
	}
}

// memstoreMemory fills a fresh in-memory store with keys in-flight claims
// (as many handlers running at once) and returns the growth of the heap in
// use, after a collection, with Watermill-style UUIDs as event IDs.
func memstoreMemory(ctx context.Context, keys int) (*MemoryResult, error) {
	req := dedup.ClaimRequest{Lease: time.Hour, Retention: 2 * time.Hour}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	st := memstore.New(&memstore.Options{MaxKeys: keys})
	for range keys {
		req.Token = dedup.NewToken()
		res, err := st.Claim(ctx, dedup.Key{Scope: "bench-memory", ID: watermill.NewUUID()}, req)
		if err != nil {
			return nil, err
		}
		if res.Status != dedup.StatusAcquired {
			return nil, fmt.Errorf("%w: memory: claim of a fresh key reported %s", ErrCheck, res.Status)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if st.Len() != keys {
		return nil, fmt.Errorf("%w: memory: %d keys held, want %d", ErrCheck, st.Len(), keys)
	}
	runtime.KeepAlive(st)
	m := newMemoryResult("memory", "in_progress", "runtime.MemStats HeapInuse growth after GC", keys,
		int64(after.HeapInuse)-int64(before.HeapInuse))
	m.PeakRSSBytes = peakRSS()
	return m, nil
}

// peakRSS returns VmHWM from /proc/self/status, or 0 where there is none.
func peakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// complete writes n done records under a scope of their own, with workers
// goroutines, and returns their keys.
func complete(ctx context.Context, st dedup.Store, scope string, n, workers int) ([]dedup.Key, error) {
	keys := make([]dedup.Key, n)
	for i := range keys {
		keys[i] = dedup.Key{Scope: scope, ID: watermill.NewUUID()}
	}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				tok := dedup.NewToken()
				res, err := st.Claim(ctx, keys[i], dedup.ClaimRequest{Token: tok, Lease: time.Minute, Retention: retention})
				if err == nil && res.Status != dedup.StatusAcquired {
					err = fmt.Errorf("%w: claim of a fresh key reported %s", ErrCheck, res.Status)
				}
				if err == nil {
					err = st.Complete(ctx, keys[i], tok, retention)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	return keys, errors.Join(errs...)
}

// redisMemory completes n records and averages MEMORY USAGE over them.
func redisMemory(ctx context.Context, st *redisstore.Store, c *cleaner, runID string, n int) (*MemoryResult, error) {
	if c.redis == nil {
		return nil, errors.New("no Redis client")
	}
	keys, err := complete(ctx, st, "bench-memory-"+runID, n, 8)
	if err != nil {
		return nil, err
	}
	var total int64
	for _, k := range keys {
		b, err := c.redis.MemoryUsage(ctx, st.RedisKey(k), 0).Result()
		if err != nil {
			return nil, fmt.Errorf("MEMORY USAGE: %w", err)
		}
		total += b
	}
	return newMemoryResult("redis", "done", "MEMORY USAGE key SAMPLES 0, averaged", n, total), nil
}

// sqlMemory completes n more records in the run's table and divides the
// table's size (indexes included) by its rows, every done record of the
// run's rounds included.
func sqlMemory(ctx context.Context, st *sqlstore.Store, runID string, n int) (*MemoryResult, error) {
	workers := 8
	if st.Dialect() == sqlstore.SQLite {
		workers = 1
	}
	if _, err := complete(ctx, st, "bench-memory-"+runID, n, workers); err != nil {
		return nil, err
	}
	db, table := st.DB(), st.Table()
	var rows int64
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&rows); err != nil {
		return nil, err
	}
	var (
		size   int64
		method string
	)
	switch st.Dialect() {
	case sqlstore.Postgres:
		method = "pg_total_relation_size / rows (dead tuples of updates included until vacuum)"
		if _, err := db.ExecContext(ctx, "VACUUM "+table); err != nil {
			return nil, err
		}
		if err := db.QueryRowContext(ctx, "SELECT pg_total_relation_size($1::regclass)", table).Scan(&size); err != nil {
			return nil, err
		}
	case sqlstore.MySQL:
		method = "information_schema data_length + index_length / rows, after ANALYZE TABLE"
		ar, err := db.QueryContext(ctx, "ANALYZE TABLE "+table)
		if err != nil {
			return nil, err
		}
		for ar.Next() {
		}
		_ = ar.Close()
		if err := db.QueryRowContext(ctx,
			"SELECT data_length + index_length FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
			table).Scan(&size); err != nil {
			return nil, err
		}
	case sqlstore.SQLite:
		method = "page_count × page_size / rows (the whole file, free pages excluded)"
		var pages, free, pageSize int64
		for q, v := range map[string]*int64{"PRAGMA page_count": &pages, "PRAGMA freelist_count": &free, "PRAGMA page_size": &pageSize} {
			if err := db.QueryRowContext(ctx, q).Scan(v); err != nil {
				return nil, err
			}
		}
		size = (pages - free) * pageSize
	}
	if rows == 0 {
		return nil, fmt.Errorf("%w: memory: table %s is empty", ErrCheck, table)
	}
	return newMemoryResult(string(kindOf(st.Dialect())), "done", method, int(rows), size), nil
}

func kindOf(d sqlstore.Dialect) backend.Kind {
	switch d {
	case sqlstore.Postgres:
		return backend.Postgres
	case sqlstore.MySQL:
		return backend.MySQL
	default:
		return backend.SQLite
	}
}
