package console

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"
	"time"
)

// NewMemoryIndex returns an index in memory: it is rebuilt from the DLQs
// at each start. It is safe for concurrent use.
func NewMemoryIndex() Index {
	return &memIndex{dlqs: map[string]*memDLQ{}, jobList: map[string][]byte{}}
}

type memIndex struct {
	mu      sync.RWMutex
	dlqs    map[string]*memDLQ
	jobList map[string][]byte
}

type memDLQ struct {
	ends map[string]int64
	rows []row
	byID map[string]int
}

var _ Index = (*memIndex)(nil)

func (m *memIndex) dlq(name string) *memDLQ {
	d := m.dlqs[name]
	if d == nil {
		d = &memDLQ{ends: map[string]int64{}, byID: map[string]int{}}
		m.dlqs[name] = d
	}
	return d
}

func (m *memIndex) state(ctx context.Context, dlq string) (indexState, error) {
	if err := ctx.Err(); err != nil {
		return indexState{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	st := indexState{ends: map[string]int64{}, digests: map[string]int64{}}
	if d := m.dlqs[dlq]; d != nil {
		maps.Copy(st.ends, d.ends)
		for _, r := range d.rows {
			st.digests[r.ID] = r.Digest
			st.seq = max(st.seq, r.Seq)
		}
	}
	return st, nil
}

func (m *memIndex) add(ctx context.Context, dlq string, rows []row, ends map[string]int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.dlq(dlq)
	for _, r := range rows {
		if _, dup := d.byID[r.ID]; dup {
			continue
		}
		d.byID[r.ID] = len(d.rows)
		d.rows = append(d.rows, r)
	}
	maps.Copy(d.ends, ends)
	return nil
}

func (m *memIndex) marks(ctx context.Context, dlq string) (map[string]mark, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := map[string]mark{}
	if d := m.dlqs[dlq]; d != nil {
		for _, r := range d.rows {
			if r.Resolution != "" {
				out[r.ID] = r.mark
			}
		}
	}
	return out, nil
}

func (m *memIndex) setMarks(ctx context.Context, dlq string, changes map[string]mark) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.dlq(dlq)
	for id, mk := range changes {
		if i, ok := d.byID[id]; ok {
			d.rows[i].mark = mk
		}
	}
	return nil
}

func (m *memIndex) groups(ctx context.Context, dlq string, since []time.Time) ([]group, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	d := m.dlqs[dlq]
	if d == nil {
		return nil, nil
	}
	byID := map[string]*group{}
	for _, r := range d.rows { // oldest first: a group's sample is its first error
		if !r.Unresolved() {
			continue
		}
		g := byID[r.Group]
		if g == nil {
			g = &group{DLQ: dlq, ID: r.Group, Reason: r.Reason, ErrorClass: r.ErrorClass, Handler: r.Handler, Key: r.GroupKey, Sample: r.Error, First: r.At, Last: r.At, Recent: make([]int, len(since))}
			byID[r.Group] = g
		}
		g.Count++
		for i, t := range since {
			if !r.At.Before(t) {
				g.Recent[i]++
			}
		}
		if r.At.Before(g.First) {
			g.First = r.At
		}
		if r.At.After(g.Last) {
			g.Last = r.At
		}
	}
	out := make([]group, 0, len(byID))
	for _, g := range byID {
		out = append(out, *g)
	}
	sortGroups(out)
	return out, nil
}

// sortGroups orders groups largest first, then by ID.
func sortGroups(gs []group) {
	slices.SortFunc(gs, func(a, b group) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.ID, b.ID))
	})
}

func (m *memIndex) hourly(ctx context.Context, dlq string, from time.Time) (map[int64]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := map[int64]int{}
	m.mu.RLock()
	defer m.mu.RUnlock()
	d := m.dlqs[dlq]
	if d == nil {
		return out, nil
	}
	for _, r := range d.rows {
		if !r.At.Before(from) {
			out[hourOf(r.At)]++
		}
	}
	return out, nil
}

// hourOf numbers the UTC hour holding t: Unix seconds / 3600.
func hourOf(t time.Time) int64 { return t.Unix() / 3600 }

func (m *memIndex) list(ctx context.Context, q query) ([]row, int, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	d := m.dlqs[q.DLQ]
	if d == nil {
		return nil, 0, nil
	}
	var page []row
	total := 0
	for i := len(d.rows) - 1; i >= 0; i-- { // newest first
		if !q.match(d.rows[i]) {
			continue
		}
		if total >= q.Offset && len(page) < q.Limit {
			page = append(page, d.rows[i])
		}
		total++
	}
	return page, total, nil
}

func (m *memIndex) get(ctx context.Context, dlq, id string) (row, bool, error) {
	if err := ctx.Err(); err != nil {
		return row{}, false, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if d := m.dlqs[dlq]; d != nil {
		if i, ok := d.byID[id]; ok {
			return d.rows[i], true, nil
		}
	}
	return row{}, false, nil
}

func (m *memIndex) saveJob(ctx context.Context, id string, state []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.jobList[id] = slices.Clone(state)
	return nil
}

func (m *memIndex) jobs(ctx context.Context) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([][]byte, 0, len(m.jobList))
	for _, b := range m.jobList {
		out = append(out, slices.Clone(b))
	}
	return out, nil
}
