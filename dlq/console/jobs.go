package console

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/idempo/idempo/dlq/dlqops"
)

// A job is a confirmed replay or purge running in the background of
// [Handler.Run]: it does not depend on the request that started it, shows
// its progress to every console watching, and is kept in the index so that
// a console restarted on the same index resumes it (its snapshot makes the
// resumed run act on what is left of exactly the same entries).
type job struct {
	ID, DLQ, Kind, To string
	Operator, What    string
	Filter            dlqops.Filter
	Snapshot          string
	Total             int
	// State is jobRunning, jobDone or jobFailed.
	State   string
	Done    int
	Resumed int // how often a restarted console resumed it
	Result  dlqops.Result
	Err     string
	Started time.Time
	Ended   time.Time
}

const (
	jobRunning = "running"
	jobDone    = "done"
	jobFailed  = "failed"
)

// jobSaveEvery is how many entries a job settles between two saves of its
// progress.
const jobSaveEvery = 100

// jobs tracks the jobs this console runs.
type jobs struct {
	mu  sync.Mutex
	ctx context.Context // Run's; nil while Run is not running
	wg  sync.WaitGroup
	m   map[string]*job
}

// start runs j in the background if Run is running; false otherwise.
func (h *Handler) startJob(j *job) bool {
	h.jobs.mu.Lock()
	ctx := h.jobs.ctx
	if ctx == nil {
		h.jobs.mu.Unlock()
		return false
	}
	h.jobs.m[j.ID] = j
	h.jobs.wg.Add(1)
	h.jobs.mu.Unlock()
	go func() {
		defer h.jobs.wg.Done()
		h.runJob(ctx, j)
	}()
	return true
}

func (h *Handler) runJob(ctx context.Context, j *job) {
	save := func() {
		h.jobs.mu.Lock()
		b, _ := json.Marshal(j)
		h.jobs.mu.Unlock()
		if err := h.idx.saveJob(context.WithoutCancel(ctx), j.ID, b); err != nil {
			h.cfg.Logger.Warn("dead-letter console: save a job's progress", "job", j.ID, "error", redact(err.Error()))
		}
	}
	save()
	ops, err := dlqops.New(dlqops.Config{
		Source: h.cfg.Source, Resolutions: h.cfg.Resolutions, Publisher: h.cfg.Publisher,
		MaxReplays: h.cfg.MaxReplays, Operator: j.Operator,
	})
	var res dlqops.Result
	if err == nil {
		progress := func(done int, _ dlqops.Entry, _ dlqops.Action) {
			h.jobs.mu.Lock()
			j.Done = done
			h.jobs.mu.Unlock()
			if done%jobSaveEvery == 0 {
				save()
			}
		}
		if j.Kind == "replay" {
			res, err = ops.Replay(ctx, j.DLQ, j.Filter, dlqops.ReplayOptions{Snapshot: j.Snapshot, To: j.To, Progress: progress})
		} else {
			res, err = ops.Purge(ctx, j.DLQ, j.Filter, dlqops.PurgeOptions{Snapshot: j.Snapshot, Progress: progress})
		}
	}
	if ctx.Err() != nil {
		save() // stopped with the console: resumed at its next start
		return
	}
	for _, f := range res.Failures {
		f.Message = redact(f.Message)
	}
	h.jobs.mu.Lock()
	j.Result, j.State, j.Ended = res, jobDone, h.cfg.Now()
	if err != nil && !errors.Is(err, dlqops.ErrEntriesFailed) {
		j.State, j.Err = jobFailed, redact(err.Error())
	}
	h.jobs.mu.Unlock()
	save()
	if serr := h.syncMarks(context.WithoutCancel(ctx), j.DLQ); serr != nil {
		h.cfg.Logger.Warn("dead-letter console: update the index after a job", "error", redact(serr.Error()))
	}
}

// resumeJobs starts the jobs the index holds as running (a console stopped
// while they ran), of the DLQs this console shows only: a console sharing
// the index with others leaves their DLQs' jobs to them (it would read
// those DLQs through its own source, maybe the wrong broker).
func (h *Handler) resumeJobs(ctx context.Context) error {
	raw, err := h.idx.jobs(ctx)
	if err != nil {
		return err
	}
	for _, b := range raw {
		var j job
		if err := json.Unmarshal(b, &j); err != nil || j.ID == "" || !slices.Contains(h.cfg.DLQs, j.DLQ) {
			continue
		}
		h.jobs.mu.Lock()
		_, known := h.jobs.m[j.ID]
		h.jobs.mu.Unlock()
		if known {
			continue
		}
		if j.State != jobRunning {
			h.jobs.mu.Lock()
			h.jobs.m[j.ID] = &j
			h.jobs.mu.Unlock()
			continue
		}
		j.Resumed++
		h.startJob(&j) //nolint:contextcheck // under Run's context, as every job
	}
	return nil
}

// job shows a job's progress; it reloads itself while the job runs (the
// only use of the browser beyond plain HTML, and a plain meta refresh).
func (h *Handler) job(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	h.jobs.mu.Lock()
	j, ok := h.jobs.m[id]
	var cp job
	if ok {
		cp = *j
	}
	h.jobs.mu.Unlock()
	if !ok {
		h.fail(w, r, http.StatusNotFound, "No such job", "This console knows no job "+quote(id)+".")
		return
	}
	h.render(w, r, http.StatusOK, "job", "The "+cp.Kind+" of "+cp.What, cp)
}
