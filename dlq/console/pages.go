package console

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/idempo/idempo/dlq"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// page is what every template gets.
type page struct {
	Title    string
	Operator string
	CSRF     string
	ReadOnly bool
	Data     any
}

func parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"when":   when,
		"dlqURL": func(d string) string { return "dlq/" + url.PathEscape(d) },
		"entryURL": func(d, id string) string {
			return "dlq/" + url.PathEscape(d) + "/entry?id=" + url.QueryEscape(id)
		},
		"dash": func(s string) string {
			if s == "" {
				return "—"
			}
			return s
		},
	}
	out := map[string]*template.Template{}
	for _, name := range []string{"overview", "list", "entry", "confirm", "result", "error", "job"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: templates: %w", err)
		}
		out[name] = t
	}
	return out, nil
}

func when(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// base returns the relative path from r's page back to the console's root,
// so that the console works under any mount point.
func base(r *http.Request) string {
	n := strings.Count(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	if n == 0 {
		return "./"
	}
	return strings.Repeat("../", n)
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	op := operator(r)
	j, isJob := data.(job)
	p := struct {
		page
		Base    string
		Refresh bool
	}{page{Title: title, Operator: op, CSRF: h.csrfToken(op), ReadOnly: h.cfg.ReadOnly, Data: data}, base(r), isJob && j.State == jobRunning}
	var b bytes.Buffer
	if err := h.tmpl[name].Execute(&b, p); err != nil {
		h.cfg.Logger.Error("dead-letter console: render", "page", name, "error", err)
		http.Error(w, "The page could not be rendered; the error is in the console's log.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = b.WriteTo(w)
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, title, msg string) {
	h.render(w, r, status, "error", title, struct {
		Status  int
		Message string
	}{status, msg})
}

// --- overview ---

// recentWindows are the overview's "counts over time": failures in the
// last hour, day and week.
var recentWindows = []struct {
	Label string
	D     time.Duration
}{{"1 h", time.Hour}, {"24 h", 24 * time.Hour}, {"7 d", 7 * 24 * time.Hour}}

func recentSince(now time.Time) []time.Time {
	out := make([]time.Time, len(recentWindows))
	for i, w := range recentWindows {
		out[i] = now.Add(-w.D)
	}
	return out
}

type dlqView struct {
	Name       string
	Unresolved int
	Recent     []int
	Progress   progress
	Groups     []group
	Charts     []chart
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	var views []dlqView
	for _, d := range h.cfg.DLQs {
		gs, err := h.idx.groups(r.Context(), d, recentSince(h.cfg.Now()))
		if err != nil {
			h.unavailable(w, r, "read the index of "+d, err)
			return
		}
		cs, err := h.charts(r.Context(), d)
		if err != nil {
			h.unavailable(w, r, "read the index of "+d, err)
			return
		}
		v := dlqView{Name: d, Progress: h.progress.get(d), Groups: gs, Charts: cs, Recent: make([]int, len(recentWindows))}
		for _, g := range gs {
			v.Unresolved += g.Count
			for i, n := range g.Recent {
				v.Recent[i] += n
			}
		}
		views = append(views, v)
	}
	h.jobs.mu.Lock()
	var js []job
	for _, j := range h.jobs.m {
		js = append(js, *j)
	}
	h.jobs.mu.Unlock()
	slices.SortFunc(js, func(a, b job) int { return b.Started.Compare(a.Started) })
	h.render(w, r, http.StatusOK, "overview", "Dead letters", struct {
		DLQs    []dlqView
		Windows any
		Jobs    []job
	}{views, recentWindows, js})
}

// --- list ---

type listView struct {
	DLQ              string
	Q                query
	Since, Until     string
	Rows             []row
	Total, From, To  int
	Prev, Next       string
	Reasons, Classes []string
	GroupKey         string
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	d, ok := h.knownDLQ(w, r)
	if !ok {
		return
	}
	f := r.URL.Query()
	q := query{
		DLQ: d, Search: strings.TrimSpace(f.Get("q")), Reason: f.Get("reason"), ErrorClass: f.Get("class"),
		Handler: f.Get("handler"), Group: f.Get("group"), All: f.Get("all") == "1", Limit: h.cfg.PageSize,
	}
	var problems []string
	if q.Reason != "" && !slices.Contains(reasons, q.Reason) {
		problems = append(problems, "reason "+quote(q.Reason)+" is not one of "+strings.Join(reasons, ", "))
	}
	var err error
	if q.Since, err = parseTime(f.Get("since"), h.cfg.Now()); err != nil {
		problems = append(problems, "since: "+err.Error())
	}
	if q.Until, err = parseTime(f.Get("until"), h.cfg.Now()); err != nil {
		problems = append(problems, "until: "+err.Error())
	}
	pageNo := 1
	if p := f.Get("page"); p != "" {
		if pageNo, err = strconv.Atoi(p); err != nil || pageNo < 1 || pageNo > 1_000_000 {
			problems = append(problems, "page "+quote(p)+" is not a page number")
		}
	}
	if len(problems) > 0 {
		h.fail(w, r, http.StatusBadRequest, "Bad filter", strings.Join(problems, "; ")+".")
		return
	}
	q.Offset = (pageNo - 1) * q.Limit
	rows, total, err := h.idx.list(r.Context(), q)
	if err != nil {
		h.unavailable(w, r, "read the index of "+d, err)
		return
	}
	v := listView{
		DLQ: d, Q: q, Since: f.Get("since"), Until: f.Get("until"), Rows: rows, Total: total,
		From: q.Offset + 1, To: q.Offset + len(rows), Reasons: reasons, Classes: errorClasses,
	}
	if q.Group != "" && len(rows) > 0 {
		v.GroupKey = rows[0].GroupKey
	}
	link := func(p int) string {
		u := url.Values{}
		for k, vs := range f {
			if k != "page" {
				u[k] = vs
			}
		}
		u.Set("page", strconv.Itoa(p))
		return "?" + u.Encode()
	}
	if pageNo > 1 {
		v.Prev = link(pageNo - 1)
	}
	if q.Offset+len(rows) < total {
		v.Next = link(pageNo + 1)
	}
	h.render(w, r, http.StatusOK, "list", d, v)
}

var reasons = []string{
	dlq.ReasonPermanent, dlq.ReasonRetriesExhausted, dlq.ReasonDeliveryCap, dlq.ReasonMissingEventID,
	dlq.ReasonInvalidEventID, dlq.ReasonInvalidScope, dlq.ReasonIDCollision, dlq.ReasonMalformed,
}

var errorClasses = []string{"permanent", "retryable", "panic"}

// parseTime reads an RFC 3339 time, a date, or a duration back from now.
func parseTime(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return time.Time{}, fmt.Errorf("%s is neither a time (2006-01-02T15:04:05Z, 2006-01-02) nor a positive duration (90m, 24h)", quote(v))
	}
	return now.Add(-d), nil
}

// --- entry ---

type entryView struct {
	E           dlqops.Entry
	TraceID     string
	Metadata    [][2]string
	ShowPayload bool
	Hidden      bool
	PayloadKind string
	Payload     string
	PayloadSize int
	Truncated   bool
	// History is every entry of the same event in this DLQ, oldest first,
	// with how each was settled; HistoryErr says why it could not be read.
	History    []historyRow
	HistoryErr string
}

// historyRow is one dead-lettering of an event and what an operator did
// about it.
type historyRow struct {
	ID      string
	At      time.Time // dead-lettered
	Current bool      // the entry of the page
	// Outcome, By and When are the entry's resolution record ("" while
	// unresolved; Outcome "in_progress" while an operator holds it).
	Outcome, By string
	When        time.Time
}

// maxHistory is the most entries of one event an entry page lists.
const maxHistory = 100

// history returns the entries of event in dlq, oldest first, each with
// its resolution record. Resolution records are final (an entry is
// replayed or purged once): an event replayed and dead-lettered again has
// a new entry, so the entries of the event are the history of its replays.
func (h *Handler) history(ctx context.Context, dlq, current, event string) ([]historyRow, error) {
	if event == "" {
		return nil, nil
	}
	rows, _, err := h.idx.list(ctx, query{DLQ: dlq, Search: event, All: true, Limit: maxHistory})
	if err != nil {
		return nil, err
	}
	var out []historyRow
	resolved := false
	for _, r := range rows {
		if r.EventID != event {
			continue // the event ID found in an error text
		}
		out = append(out, historyRow{ID: r.ID, At: r.At, Current: r.ID == current, Outcome: r.Resolution, By: r.By})
		resolved = resolved || r.Resolution != ""
	}
	slices.SortStableFunc(out, func(a, b historyRow) int { return a.At.Compare(b.At) })
	if !resolved {
		return out, nil
	}
	recs, err := h.cfg.Resolutions.Resolutions(ctx, dlq)
	if err != nil {
		return out, err
	}
	for i := range out {
		if rec, ok := recs[out[i].ID]; ok {
			out[i].Outcome, out[i].By, out[i].When = string(rec.Outcome), rec.By, rec.At
			if rec.Status == resolution.InProgress {
				out[i].Outcome = inProgress
			}
		} else {
			out[i].Outcome, out[i].By = "", ""
		}
	}
	return out, nil
}

func (h *Handler) entry(w http.ResponseWriter, r *http.Request) {
	d, ok := h.knownDLQ(w, r)
	if !ok {
		return
	}
	id := r.URL.Query().Get("id")
	if id == "" {
		h.fail(w, r, http.StatusNotFound, "No such entry", "Name an entry: ?id=ENTRY_ID.")
		return
	}
	ops, err := h.ops(r)
	if err != nil {
		h.unavailable(w, r, "open the DLQ operations", err)
		return
	}
	e, err := ops.Show(r.Context(), d, id)
	switch {
	case errors.Is(err, dlqops.ErrNotFound):
		h.fail(w, r, http.StatusNotFound, "No such entry", "DLQ "+quote(d)+" has no entry "+quote(id)+".")
		return
	case err != nil:
		h.unavailable(w, r, "read entry "+quote(id)+" of "+d, err)
		return
	}
	v := entryView{E: e, Hidden: h.cfg.HidePayloads}
	v.ShowPayload = !h.cfg.HidePayloads || r.URL.Query().Get("payload") == "1"
	if e.Message != nil {
		v.TraceID = traceID(e.Message.Metadata.Get(dlqmeta.KeyTraceParent))
		keys := make([]string, 0, len(e.Message.Metadata))
		for k := range e.Message.Metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v.Metadata = append(v.Metadata, [2]string{k, metadataValue(k, e.Message.Metadata[k])})
		}
		v.PayloadSize = len(e.Message.Payload)
		if v.ShowPayload {
			v.PayloadKind, v.Payload, v.Truncated = renderPayload(e.Message.Payload)
		}
	}
	e.Error, e.PanicStack = redact(e.Error), redact(e.PanicStack)
	v.E = e
	if v.History, err = h.history(r.Context(), d, id, e.EventID); err != nil {
		v.HistoryErr = "The history of this event could not be read: " + redact(err.Error())
	}
	h.render(w, r, http.StatusOK, "entry", "Entry "+id, v)
}

// traceID returns the trace ID of a W3C traceparent, or "".
func traceID(tp string) string {
	parts := strings.Split(tp, "-")
	if len(parts) == 4 && len(parts[1]) == 32 {
		return parts[1]
	}
	return ""
}

var secretKey = regexp.MustCompile(`(?i)pass|secret|token|authorization|cookie|api[-_]?key|credential|signature`)

// metadataValue is v as the entry page shows it: hidden for keys that name
// a secret, URL credentials removed otherwise.
func metadataValue(k, v string) string {
	if secretKey.MatchString(k) && k != dlqmeta.KeyTraceParent {
		return "xxxxx (hidden)"
	}
	return redact(v)
}

var urlCredentials = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@\s:]*):([^/@\s]*)@`)

// redact replaces the passwords of URLs in s by "xxxxx".
func redact(s string) string { return urlCredentials.ReplaceAllString(s, "${1}${2}:xxxxx@") }

// maxShownPayload is the most of a payload an entry page shows.
const maxShownPayload = 256 << 10

// renderPayload returns how a payload is shown: indented JSON, text, or a
// hex dump for anything else.
func renderPayload(p []byte) (kind, text string, truncated bool) {
	if len(p) > maxShownPayload {
		p, truncated = p[:maxShownPayload], true
	}
	if !truncated && json.Valid(p) {
		var b bytes.Buffer
		if json.Indent(&b, p, "", "  ") == nil {
			return "JSON", b.String(), false
		}
	}
	if utf8.Valid(p) && !bytes.ContainsFunc(p, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t' }) {
		return "text", string(p), truncated
	}
	return "hex", hex.Dump(p), truncated
}

func quote(s string) string { return strconv.Quote(dlqmeta.Truncate(s, 200)) }
