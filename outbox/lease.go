package outbox

import (
	"context"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/ThreeDotsLabs/watermill"
)

// newToken returns a fencing token: random, positive, never 0 (a free
// bucket's). Tokens identify one acquisition of one relay.
func newToken() int64 { return rand.Int64N(1<<62) + 1 }

// register adds the relay's presence row to the lease table: relays count
// the live presence rows to size their fair share of buckets.
// It runs before Run's goroutines start, and again from the lease loop if
// the row was removed (after a stall longer than the lease).
func (r *Relay) register(ctx context.Context) error {
	presence, token := -1-rand.IntN(1<<30), newToken()
	_, err := r.o.db.ExecContext(ctx, r.o.x.expand(`INSERT INTO {L} (bucket, owner, token, lease_until) VALUES (?, ?, ?, {PLUS})`),
		presence, r.owner, token, durArg(r.o.dialect, r.cfg.Lease))
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.presence, r.ptoken = presence, token
	r.mu.Unlock()
	return nil
}

func (r *Relay) leaseLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.leaseTick(ctx)
		}
	}
}

// snapshot returns the buckets this relay may publish now, with their tokens.
func (r *Relay) snapshot() map[int]int64 {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[int]int64, len(r.owned))
	for b, l := range r.owned {
		if now.Before(l.until) {
			out[b] = l.token
		}
	}
	return out
}

func (r *Relay) presenceToken() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ptoken
}

func (r *Relay) tokens() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts := []int64{r.ptoken}
	for _, l := range r.owned {
		ts = append(ts, l.token)
	}
	return sortedUnique(ts)
}

type leaseRow struct {
	bucket int
	owner  string
	token  int64
	live   bool
}

// leaseTick renews this relay's leases, drops those it lost, and takes or
// gives back buckets towards its fair share: the bucket count divided by
// the live relays, rounded up.
func (r *Relay) leaseTick(ctx context.Context) {
	x, d := r.o.x, r.o.dialect
	logErr := func(what string, err error) {
		if ctx.Err() == nil {
			r.cfg.Logger.Error("outbox relay: "+what, err, watermill.LogFields{"table": r.o.table, "relay": r.owner})
		}
	}
	start := time.Now()
	// The local deadline starts before the renewal, and keeps a tenth of the
	// lease for clock rate differences and the batch under way.
	until := start.Add(r.cfg.Lease - r.cfg.Lease/10)
	if _, err := r.o.db.ExecContext(ctx, x.expand(`UPDATE {L} SET lease_until = {PLUS} WHERE token IN (`+intList(r.tokens())+`)`),
		durArg(d, r.cfg.Lease)); err != nil {
		logErr("renewing leases failed", err)
		return
	}
	rows, err := r.readLeases(ctx)
	if err != nil {
		logErr("reading leases failed", err)
		return
	}
	live, present := 0, false
	var free []int
	byBucket := map[int]leaseRow{}
	for _, l := range rows {
		byBucket[l.bucket] = l
		switch {
		case l.bucket < 0 && l.live:
			live++
			present = present || l.token == r.presenceToken()
		case l.bucket >= 0 && !l.live:
			free = append(free, l.bucket)
		}
	}
	if !present { // purged after a long stall: come back
		if err := r.register(ctx); err != nil {
			logErr("registering failed", err)
			return
		}
		live++
	}
	r.mu.Lock()
	for b, l := range r.owned {
		if row, ok := byBucket[b]; ok && row.token == l.token && row.live {
			r.owned[b] = bucketLease{token: l.token, until: until}
		} else {
			delete(r.owned, b)
		}
	}
	held := len(r.owned)
	r.mu.Unlock()

	share := (r.o.opts.Buckets + live - 1) / max(live, 1)
	switch {
	case held < share && len(free) > 0:
		rand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
		r.acquire(ctx, free[:min(share-held, len(free))], logErr)
	case held > share:
		r.releaseExtra(ctx, held-share, logErr)
	}
	if _, err := r.o.db.ExecContext(ctx, x.expand(`DELETE FROM {L} WHERE bucket < 0 AND lease_until < {NOW}`)); err != nil {
		logErr("removing expired relay rows failed", err)
	}
	if r.cfg.Retention > 0 {
		r.cleanup(ctx, logErr)
	}
}

func (r *Relay) readLeases(ctx context.Context) ([]leaseRow, error) {
	rs, err := r.o.db.QueryContext(ctx, r.o.x.expand(`SELECT bucket, owner, token, CASE WHEN lease_until > {NOW} THEN 1 ELSE 0 END FROM {L}`))
	if err != nil {
		return nil, err
	}
	defer func() { _ = rs.Close() }()
	var out []leaseRow
	for rs.Next() {
		var l leaseRow
		var live int
		if err := rs.Scan(&l.bucket, &l.owner, &l.token, &live); err != nil {
			return nil, err
		}
		l.live = live == 1
		out = append(out, l)
	}
	return out, rs.Err()
}

// acquire takes the buckets that are still free, with one new token.
func (r *Relay) acquire(ctx context.Context, buckets []int, logErr func(string, error)) {
	x := r.o.x
	token := newToken()
	start := time.Now()
	if _, err := r.o.db.ExecContext(ctx, x.expand(`UPDATE {L} SET owner = ?, token = ?, lease_until = {PLUS} WHERE bucket IN (`+
		intList(buckets)+`) AND lease_until <= {NOW}`), r.owner, token, durArg(r.o.dialect, r.cfg.Lease)); err != nil {
		logErr("acquiring buckets failed", err)
		return
	}
	rs, err := r.o.db.QueryContext(ctx, x.expand(`SELECT bucket FROM {L} WHERE token = ?`), token)
	if err != nil {
		logErr("acquiring buckets failed", err)
		return
	}
	defer func() { _ = rs.Close() }()
	var got []int
	for rs.Next() {
		var b int
		if err := rs.Scan(&b); err != nil {
			logErr("acquiring buckets failed", err)
			return
		}
		got = append(got, b)
	}
	if len(got) == 0 {
		return
	}
	r.mu.Lock()
	for _, b := range got {
		r.owned[b] = bucketLease{token: token, until: start.Add(r.cfg.Lease - r.cfg.Lease/10)}
	}
	r.mu.Unlock()
	r.signal()
}

// releaseExtra gives back n buckets (the highest) between batches; it skips
// this round when a batch is under way.
func (r *Relay) releaseExtra(ctx context.Context, n int, logErr func(string, error)) {
	if !r.busy.TryLock() {
		return
	}
	defer r.busy.Unlock()
	r.mu.Lock()
	bs := make([]int, 0, len(r.owned))
	for b := range r.owned {
		bs = append(bs, b)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(bs)))
	bs = bs[:min(n, len(bs))]
	toks := make([]int64, 0, len(bs))
	for _, b := range bs {
		toks = append(toks, r.owned[b].token)
		delete(r.owned, b)
	}
	r.mu.Unlock()
	if err := r.release(ctx, bs, toks); err != nil {
		logErr("releasing buckets failed", err) // they expire after the lease
	}
}

func (r *Relay) release(ctx context.Context, buckets []int, toks []int64) error {
	if len(buckets) == 0 {
		return nil
	}
	toks = sortedUnique(toks)
	_, err := r.o.db.ExecContext(ctx, r.o.x.expand(`UPDATE {L} SET owner = '', token = 0, lease_until = {ZERO} WHERE bucket IN (`+
		intList(buckets)+`) AND token IN (`+intList(toks)+`)`))
	return err
}

// releaseAll gives back every lease and the presence row when Run returns.
func (r *Relay) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.mu.Lock()
	bs := make([]int, 0, len(r.owned))
	toks := make([]int64, 0, len(r.owned))
	for b, l := range r.owned {
		bs = append(bs, b)
		toks = append(toks, l.token)
	}
	r.mu.Unlock()
	err := r.release(ctx, bs, toks)
	r.mu.Lock()
	clear(r.owned)
	r.mu.Unlock()
	r.mu.Lock()
	presence, ptoken := r.presence, r.ptoken
	r.mu.Unlock()
	if _, err2 := r.o.db.ExecContext(ctx, r.o.x.expand(`DELETE FROM {L} WHERE bucket = ? AND token = ?`), presence, ptoken); err == nil {
		err = err2
	}
	if err != nil {
		r.cfg.Logger.Error("outbox relay: releasing leases failed (they expire after the lease)", err, watermill.LogFields{"table": r.o.table, "relay": r.owner})
	}
}

// dropLost forgets the buckets of snap whose lease row no longer holds this
// relay's token (a mark matched fewer rows than it published), so that the
// relay stops publishing them before its next lease round.
func (r *Relay) dropLost(ctx context.Context, snap map[int]int64) {
	rows, err := r.readLeases(ctx)
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range rows {
		if tok, ok := snap[l.bucket]; ok && l.token != tok {
			if cur, held := r.owned[l.bucket]; held && cur.token == tok {
				delete(r.owned, l.bucket)
			}
		}
	}
}
