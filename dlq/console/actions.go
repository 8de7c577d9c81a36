package console

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution"
)

// pendingTTL is how long a dry run's confirmation stays valid.
const pendingTTL = 15 * time.Minute

// maxSelection is the most entries one action may name.
const maxSelection = 100_000

// pending is a dry run waiting for its confirmation: the snapshot it took
// and what it counted.
type pending struct {
	ID, DLQ, Kind, To string
	Operator          string
	What              string
	Filter            dlqops.Filter
	Snapshot          string
	Result            dlqops.Result
	Expires           time.Time
}

type confirmView struct {
	P    *pending
	Back string
}

// confirm runs the dry run of a replay or purge of the entries the form
// selects (one, the checked ones, or a whole group) and shows its counts
// with a confirmation button bound to its snapshot.
func (h *Handler) confirm(w http.ResponseWriter, r *http.Request) {
	d, ok := h.knownDLQ(w, r)
	if !ok {
		return
	}
	kind := r.PostFormValue("action")
	if kind != "replay" && kind != "purge" {
		h.fail(w, r, http.StatusBadRequest, "Bad request", "action "+quote(kind)+" is neither replay nor purge.")
		return
	}
	to := strings.TrimSpace(r.PostFormValue("to"))
	if kind == "purge" && to != "" {
		h.fail(w, r, http.StatusBadRequest, "Bad request", "a purge has no destination (to).")
		return
	}
	if len(to) > resolution.MaxLen {
		h.fail(w, r, http.StatusBadRequest, "Bad request", "the destination is longer than 255 bytes.")
		return
	}
	var (
		ids  []string
		what string
	)
	if g := r.PostFormValue("group"); g != "" {
		rows, _, err := h.idx.list(r.Context(), query{DLQ: d, Group: g, Limit: maxSelection})
		if err != nil {
			h.unavailable(w, r, "read the index of "+d, err)
			return
		}
		for _, row := range rows {
			ids = append(ids, row.ID)
		}
		what = "the group " + g
		if len(rows) > 0 {
			what = "the group " + quote(rows[0].GroupKey) + " (" + rows[0].Reason + ")"
		}
	} else {
		ids = r.PostForm["id"]
		what = "the selected entries"
		if len(ids) == 1 {
			what = "entry " + ids[0]
		}
	}
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	if len(ids) == 0 {
		h.fail(w, r, http.StatusBadRequest, "Nothing selected", "Select entries (or a group) to "+kind+".")
		return
	}
	if len(ids) > maxSelection {
		h.fail(w, r, http.StatusBadRequest, "Too many entries", "One action takes at most 100000 entries.")
		return
	}
	ops, err := h.ops(r)
	if err != nil {
		h.unavailable(w, r, "open the DLQ operations", err)
		return
	}
	f := dlqops.Filter{IDs: ids}
	var res dlqops.Result
	if kind == "replay" {
		res, err = ops.Replay(r.Context(), d, f, dlqops.ReplayOptions{DryRun: true, To: to})
	} else {
		res, err = ops.Purge(r.Context(), d, f, dlqops.PurgeOptions{DryRun: true})
	}
	if err != nil && !errors.Is(err, dlqops.ErrEntriesFailed) {
		h.unavailable(w, r, "count the entries to "+kind, err)
		return
	}
	p := &pending{
		ID: newID(), DLQ: d, Kind: kind, To: to, Operator: operator(r), What: what, Filter: f,
		Snapshot: res.Snapshot, Result: res, Expires: h.cfg.Now().Add(pendingTTL),
	}
	if p.Snapshot != "" {
		h.pendingMu.Lock()
		now := h.cfg.Now()
		for k, old := range h.pending {
			if now.After(old.Expires) {
				delete(h.pending, k)
			}
		}
		h.pending[p.ID] = p
		h.pendingMu.Unlock()
	}
	h.render(w, r, http.StatusOK, "confirm", "Confirm "+kind, confirmView{P: p, Back: "dlq/" + url.PathEscape(d)})
}

// execute runs the confirmed action on exactly the entries its dry run
// counted (the snapshot), as the operator who confirmed.
func (h *Handler) execute(w http.ResponseWriter, r *http.Request) {
	d, ok := h.knownDLQ(w, r)
	if !ok {
		return
	}
	id := r.PostFormValue("pending")
	h.pendingMu.Lock()
	p := h.pending[id]
	if p != nil && p.DLQ == d && p.Operator == operator(r) && !h.cfg.Now().After(p.Expires) {
		delete(h.pending, id) // a confirmation acts once
	} else {
		p = nil
	}
	h.pendingMu.Unlock()
	if p == nil {
		h.fail(w, r, http.StatusConflict, "Confirmation expired",
			"This confirmation is unknown, expired (after 15 minutes), was used already, or is another operator's. Start again from the list.")
		return
	}
	j := &job{
		ID: p.ID, DLQ: d, Kind: p.Kind, To: p.To, Operator: p.Operator, What: p.What, Filter: p.Filter,
		Snapshot: p.Snapshot, Total: p.Result.Replayed + p.Result.Parked + p.Result.Purged + p.Result.Skipped + p.Result.Failed,
		State: jobRunning, Started: h.cfg.Now(),
	}
	if h.startJob(j) { //nolint:contextcheck // a job runs under Run's context, not the request's
		// Relative, as every link: the console may be mounted under a prefix
		// (http.Redirect would make it absolute from the stripped path).
		w.Header().Set("Location", base(r)+"jobs/"+url.PathEscape(j.ID))
		w.WriteHeader(http.StatusSeeOther)
		return
	}
	// Without Run, the action runs within this request.
	ops, err := h.ops(r)
	if err != nil {
		h.unavailable(w, r, "open the DLQ operations", err)
		return
	}
	// The action goes on if the operator closes the page.
	ctx := context.WithoutCancel(r.Context())
	var res dlqops.Result
	if p.Kind == "replay" {
		res, err = ops.Replay(ctx, d, p.Filter, dlqops.ReplayOptions{Snapshot: p.Snapshot, To: p.To})
	} else {
		res, err = ops.Purge(ctx, d, p.Filter, dlqops.PurgeOptions{Snapshot: p.Snapshot})
	}
	if err != nil && !errors.Is(err, dlqops.ErrEntriesFailed) {
		h.unavailable(w, r, p.Kind+" the entries", err)
		return
	}
	if serr := h.syncMarks(ctx, d); serr != nil {
		h.cfg.Logger.Warn("dead-letter console: update the index after an action", "error", redact(serr.Error()))
	}
	for _, f := range res.Failures {
		f.Message = redact(f.Message)
	}
	h.render(w, r, http.StatusOK, "result", "Done", struct {
		P    *pending
		R    dlqops.Result
		Back string
	}{p, res, "dlq/" + url.PathEscape(d)})
}
