package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dlq/resolution"
)

func TestOverview(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	r := b.get(t, "/")
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.body, "Not indexed yet")
	b.refresh(t)
	r = b.get(t, "/")
	require.Equal(t, http.StatusOK, r.status, r.body)
	for _, want := range []string{
		"orders.dlq</a>: 6 unresolved", "charge for order &lt;n&gt; declined: card &lt;q&gt;", "dial tcp &lt;addr&gt;: connection refused",
		"permanent_error", "retries_exhausted", "2026-11-26 03:00:00Z", "Failed in the last 1 h: 2, 24 h: 5, 7 d: 5 (unresolved)", "<td>0 / 3 / 3</td>", "2026-11-26 03:02:00Z", "Replay group…", "Acting as <strong>alice</strong>",
		`<th scope="col">Count</th>`, `<th scope="row"`,
	} {
		require.Contains(t, r.body, want)
	}
	require.Equal(t, "DENY", r.header.Get("X-Frame-Options"))
	require.Contains(t, r.header.Get("Content-Security-Policy"), "default-src 'none'")
	require.NotContains(t, r.body, "<script", "works without JavaScript")
}

// TestOverviewCharts: the overview draws, per DLQ, the failures of each
// hour of the last day and each day of the last week, resolved or not.
func TestOverviewCharts(t *testing.T) {
	t.Parallel()
	b := setup(t, nil) // the console's clock says 05:00
	b.src.deadLetter(testDLQ, "old", "evt-old", "permanent_error", "charge", "x", t0.Add(-50*time.Hour), `{}`)
	b.refresh(t)
	r := b.get(t, "/")
	require.Equal(t, http.StatusOK, r.status, r.body)
	for _, want := range []string{
		`<title id="hours-orders.dlq">Per hour, last 24 h (UTC): 5 failures in all, most in 11-26 03:00–04:00Z (3)</title>`,
		`<title>11-26 03:00–04:00Z: 3 failures</title>`, `<title>11-26 04:00–05:00Z: 2 failures</title>`,
		`<title>11-26 05:00–06:00Z: 0 failures</title>`, `<title>11-25 06:00–07:00Z: 0 failures</title>`,
		`<title id="days-orders.dlq">Per day, last 7 days (UTC): 6 failures in all, most in Thu 2026-11-26 (5)</title>`,
		`<title>Tue 2026-11-24: 1 failure</title>`, `<title>Fri 2026-11-20: 0 failures</title>`,
		`<text x="0" y="62" class="axis">06:00</text>`, `role="img"`,
	} {
		require.Contains(t, r.body, want)
	}
	require.Equal(t, 24+7, strings.Count(r.body, "<rect "), "one bar per hour and per day")
	// The tallest bar is the chart's height; a period without failures
	// still shows, as a line.
	require.Contains(t, r.body, `y="0" width="12" height="48" class="bar"><title>11-26 03:00`)
	require.Contains(t, r.body, `height="1" class="bar zero"><title>11-26 05:00`)

	// Replayed entries still count: the charts show what failed.
	_, pending := b.dryRun(t, url.Values{"action": {"replay"}, "id": {"p1", "p2", "p3"}})
	require.Equal(t, http.StatusOK, b.post(t, "/dlq/orders.dlq/execute", url.Values{"pending": {pending}}).status)
	r = b.get(t, "/")
	require.Contains(t, r.body, `<title>11-26 03:00–04:00Z: 3 failures</title>`)
	require.Contains(t, r.body, "orders.dlq</a>: 4 unresolved")
}

func TestIndexingProgress(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	// A pass stopped mid-way shows how far it got, of how many.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.Error(t, b.h.Refresh(ctx))
	b.h.progress.update(testDLQ, func(p *progress) { p.Running, p.Read, p.Err = true, 3, "" })
	r := b.get(t, "/")
	require.Contains(t, r.body, "Indexing 3 of 6…")
}

func TestStaticAssets(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	r := b.get(t, "/static/style.css")
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.header.Get("Content-Type"), "text/css")
	require.Equal(t, http.StatusNotFound, b.get(t, "/nowhere").status)
}

func TestList(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.PageSize = 2 })
	b.refresh(t)
	r := b.get(t, "/dlq/orders.dlq")
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Contains(t, r.body, "Entries 1–2 of 6")
	require.Contains(t, r.body, `rel="next"`)
	require.NotContains(t, r.body, `rel="prev"`)
	require.Contains(t, r.body, "malformed", "the foreign copy is flagged")
	require.Contains(t, r.body, `<label for="q">`, "inputs have labels")
	r = b.get(t, "/dlq/orders.dlq?page=3")
	require.Contains(t, r.body, "Entries 5–6 of 6")
	require.Contains(t, r.body, `rel="prev"`)
	require.NotContains(t, r.body, `rel="next"`)

	r = b.get(t, "/dlq/orders.dlq?q=evt-s2")
	require.Contains(t, r.body, "Entries 1–1 of 1")
	require.Contains(t, r.body, ">s2</a>")
	r = b.get(t, "/dlq/orders.dlq?reason=retries_exhausted&since=2026-11-26T04:00:30Z")
	require.Contains(t, r.body, "Entries 1–1 of 1")
	require.Contains(t, r.body, ">s2</a>")
	r = b.get(t, "/dlq/orders.dlq?since=90m")
	require.Contains(t, r.body, "Entries 1–2 of 2", "90 minutes back from 05:00: the stock failures")
	r = b.get(t, "/dlq/orders.dlq?handler=nobody")
	require.Contains(t, r.body, "No entries match.")

	for _, bad := range []string{"?reason=bogus", "?since=yesterday", "?until=-5m", "?page=0", "?page=x"} {
		r = b.get(t, "/dlq/orders.dlq"+bad)
		require.Equal(t, http.StatusBadRequest, r.status, bad)
		require.Contains(t, r.body, "Bad filter")
	}
	r = b.get(t, "/dlq/other.dlq")
	require.Equal(t, http.StatusNotFound, r.status)
	require.Contains(t, r.body, `does not show a DLQ named &#34;other.dlq&#34;`)
}

func TestEntry(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.refresh(t)
	r := b.get(t, "/dlq/orders.dlq/entry?id=p2")
	require.Equal(t, http.StatusOK, r.status, r.body)
	for _, want := range []string{"evt-p2", "charge", "permanent_error", "3, 1, 0", "Shown as JSON", "{\n  &#34;order&#34;: 1001\n}", "idempo_attempts"} {
		require.Contains(t, r.body, want)
	}
	require.Contains(t, b.get(t, "/dlq/orders.dlq/entry?id=s1").body, "Shown as text")
	r = b.get(t, "/dlq/orders.dlq/entry?id=foreign-1")
	require.Equal(t, http.StatusOK, r.status, "a copy written by another tool has a page")
	require.Contains(t, r.body, "Shown as hex")
	require.Contains(t, r.body, "00 ff 10 78")
	require.Contains(t, r.body, "idempo_attempts is not a count")
	require.Contains(t, r.body, "not written by idempo")

	r = b.get(t, "/dlq/orders.dlq/entry?id=nope")
	require.Equal(t, http.StatusNotFound, r.status)
	require.Contains(t, r.body, "has no entry &#34;nope&#34;")
	for _, id := range []string{"a/b c", ".", "..", ""} {
		r = b.get(t, "/dlq/orders.dlq/entry?id="+url.QueryEscape(id))
		require.Equal(t, http.StatusNotFound, r.status, id)
	}
}

// TestEntryHistory: an entry page lists every entry of its event in the
// DLQ (the event replayed and dead-lettered again), oldest first, with who
// replayed or purged each and when.
func TestEntryHistory(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.refresh(t)
	r := b.get(t, "/dlq/orders.dlq/entry?id=p1")
	require.Contains(t, r.body, "History of event evt-p1")
	require.Contains(t, r.body, "p1 (this entry)")
	require.Equal(t, 1, strings.Count(r.body, "<tr class=\"current\">"))

	_, pending := b.dryRun(t, url.Values{"action": {"replay"}, "id": {"p1"}})
	r = b.post(t, "/dlq/orders.dlq/execute", url.Values{"pending": {pending}})
	require.Equal(t, http.StatusOK, r.status, r.body)
	// The replay failed again: a new entry of the same event, and another
	// event whose error text names it.
	b.src.deadLetter(testDLQ, "p1-again", "evt-p1", "permanent_error", "charge", "declined again", t0.Add(90*time.Minute), `{}`)
	b.src.deadLetter(testDLQ, "x1", "evt-x1", "permanent_error", "charge", "duplicate of evt-p1", t0.Add(91*time.Minute), `{}`)
	b.refresh(t)
	_, pending = b.dryRun(t, url.Values{"action": {"purge"}, "id": {"p1-again"}})
	require.Equal(t, http.StatusOK, b.post(t, "/dlq/orders.dlq/execute", url.Values{"pending": {pending}}).status)

	recs, err := b.res.Resolutions(context.Background(), testDLQ)
	require.NoError(t, err)
	r = b.get(t, "/dlq/orders.dlq/entry?id=p1-again")
	require.Equal(t, http.StatusOK, r.status, r.body)
	_, hist, ok := strings.Cut(r.body, "History of event")
	require.True(t, ok, r.body)
	hist, _, ok = strings.Cut(hist, "</table>")
	require.True(t, ok, r.body)
	first := strings.Index(hist, `entry?id=p1"`)
	second := strings.Index(hist, "p1-again (this entry)")
	require.True(t, first >= 0 && second > first, "oldest first:\n%s", hist)
	require.Contains(t, hist, "<td>replayed</td><td>alice</td><td>"+when(recs["p1"].At)+"</td>")
	require.Contains(t, hist, "<td>purged</td><td>alice</td><td>"+when(recs["p1-again"].At)+"</td>")
	require.NotContains(t, hist, "x1", "an event named in another's error text is not its history")
	require.Contains(t, b.get(t, "/dlq/orders.dlq/entry?id=p1").body, "p1-again</a>", "the older entry links to the newer")
}

func TestEntryHidesPayloadsAndSecrets(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.HidePayloads = true })
	m := b.src.topics[testDLQ][0]
	m.Metadata.Set("db_password", "hunter2")
	m.Metadata.Set("Authorization", "Bearer abc123")
	m.Metadata.Set("callback", "https://svc:topsecret@example.com/hook")
	m.Metadata.Set("idempo_error", "post https://svc:topsecret@example.com/hook failed")
	r := b.get(t, "/dlq/orders.dlq/entry?id=p1")
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Contains(t, r.body, "Show the payload")
	require.NotContains(t, r.body, "order&#34;: 1000")
	for _, secret := range []string{"hunter2", "abc123", "topsecret"} {
		require.NotContains(t, r.body, secret)
	}
	require.Contains(t, r.body, "https://svc:xxxxx@example.com/hook")
	r = b.get(t, "/dlq/orders.dlq/entry?id=p1&payload=1")
	require.Contains(t, r.body, "&#34;order&#34;: 1000")
}

func TestReplayOne(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.refresh(t)
	r, pending := b.dryRun(t, url.Values{"action": {"replay"}, "id": {"p2"}})
	require.Contains(t, r.body, "1 to replay")
	require.Equal(t, 0, b.pub.count("orders"), "a dry run publishes nothing")
	require.NotEmpty(t, pending)
	r = b.post(t, "/dlq/orders.dlq/execute", url.Values{"pending": {pending}})
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Contains(t, r.body, "1 replayed")
	require.Equal(t, 1, b.pub.count("orders"))
	require.Equal(t, "evt-p2", b.pub.sent["orders"][0].UUID)
	recs, err := b.res.Resolutions(context.Background(), testDLQ)
	require.NoError(t, err)
	require.Equal(t, resolution.Replayed, recs["p2"].Outcome)
	require.Equal(t, testUser, recs["p2"].By, "the operator is the authenticated user")
	// The index knows at once; the entry page says who.
	require.Contains(t, b.get(t, "/dlq/orders.dlq").body, "Entries 1–5 of 5")
	require.Contains(t, b.get(t, "/dlq/orders.dlq?all=1").body, "replayed by alice")
	require.Contains(t, b.get(t, "/dlq/orders.dlq/entry?id=p2").body, "replayed by alice at")
	// A confirmation acts once.
	r = b.post(t, "/dlq/orders.dlq/execute", url.Values{"pending": {pending}})
	require.Equal(t, http.StatusConflict, r.status)
	require.Equal(t, 1, b.pub.count("orders"))
}

func TestReplaySelectedToAnotherTopic(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.refresh(t)
	r, pending := b.dryRun(t, url.Values{"action": {"replay"}, "id": {"p1", "s1", "p1"}, "to": {"orders.retry"}})
	require.Contains(t, r.body, "2 to replay")
	r = b.post(t, "/dlq/orders.dlq/execute", url.Values{"pending": {pending}})
	require.Contains(t, r.body, "2 replayed")
	require.Equal(t, 2, b.pub.count("orders.retry"))
	require.Equal(t, 0, b.pub.count("orders"))
}

// A group action acts on exactly what its dry run counted: an entry of the
// group dead-lettered after the dry run is left alone.
func TestReplayGroupSnapshot(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.refresh(t)
	gs, err := b.h.idx.groups(context.Background(), testDLQ, nil)
	require.NoError(t, err)
	r, pending := b.dryRun(t, url.Values{"action": {"replay"}, "group": {gs[0].ID}})
	require.Contains(t, r.body, "3 to replay")
	require.Contains(t, r.body, "the group &#34;charge for order &lt;n&gt; declined")
	b.src.deadLetter(testDLQ, "p4", "evt-p4", "permanent_error", "charge", `charge for order 9 declined: card "1"`, t0.Add(time.Hour), "{}")
	b.refresh(t)
	// Another operator purges p1 meanwhile: it counts as skipped, so the
	// counts add up to the dry run's.
	k := resolution.Key{DLQ: testDLQ, EntryID: "p1"}
	begun, err := b.res.Begin(context.Background(), k, "bob", time.Minute)
	require.NoError(t, err)
	_, err = b.res.Finish(context.Background(), k, begun.Token, resolution.Purged)
	require.NoError(t, err)
	r = b.post(t, "/dlq/orders.dlq/execute", url.Values{"pending": {pending}})
	require.Contains(t, r.body, "2 replayed, 0 parked, 0 purged, 1 skipped")
	require.Equal(t, 2, b.pub.count("orders"))
	r = b.get(t, "/dlq/orders.dlq?group="+gs[0].ID)
	require.Contains(t, r.body, "Entries 1–1 of 1")
	require.Contains(t, r.body, ">p4</a>")
}

func TestPurgeGroup(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.refresh(t)
	gs, err := b.h.idx.groups(context.Background(), testDLQ, nil)
	require.NoError(t, err)
	_, pending := b.dryRun(t, url.Values{"action": {"purge"}, "group": {gs[1].ID}})
	r := b.post(t, "/dlq/orders.dlq/execute", url.Values{"pending": {pending}})
	require.Contains(t, r.body, "2 purged")
	require.Equal(t, 0, b.pub.count("orders"))
	require.Contains(t, b.get(t, "/").body, "orders.dlq</a>: 4 unresolved")
	recs, err := b.res.Resolutions(context.Background(), testDLQ)
	require.NoError(t, err)
	require.Equal(t, resolution.Purged, recs["s1"].Outcome)
	require.Equal(t, testUser, recs["s2"].By)
}

func TestActionBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.refresh(t)
	for _, tc := range []struct {
		form   url.Values
		status int
		want   string
	}{
		{url.Values{"action": {"delete"}, "id": {"p1"}}, http.StatusBadRequest, "neither replay nor purge"},
		{url.Values{"action": {"replay"}}, http.StatusBadRequest, "Nothing selected"},
		{url.Values{"action": {"purge"}, "id": {"p1"}, "to": {"x"}}, http.StatusBadRequest, "no destination"},
		{url.Values{"action": {"replay"}, "id": {"unknown"}}, http.StatusOK, "Nothing to do"},
		{url.Values{"action": {"replay"}, "group": {"0000000000000000"}}, http.StatusBadRequest, "Nothing selected"},
	} {
		r := b.post(t, "/dlq/orders.dlq/confirm", tc.form)
		require.Equal(t, tc.status, r.status, "%v: %s", tc.form, r.body)
		require.Contains(t, r.body, tc.want, "%v", tc.form)
	}
	r := b.post(t, "/dlq/orders.dlq/execute", url.Values{"pending": {"forged"}})
	require.Equal(t, http.StatusConflict, r.status)
	r = b.post(t, "/dlq/other.dlq/confirm", url.Values{"action": {"replay"}, "id": {"p1"}})
	require.Equal(t, http.StatusNotFound, r.status)
	// A replay whose publish fails reports the entry and leaves it unresolved.
	b.pub.fail = true
	_, pending := b.dryRun(t, url.Values{"action": {"replay"}, "id": {"p1"}})
	r = b.post(t, "/dlq/orders.dlq/execute", url.Values{"pending": {pending}})
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.body, "1 failed")
	require.Contains(t, r.body, "publish refused")
}

func TestCSRF(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.refresh(t)
	_, pending := b.dryRun(t, url.Values{"action": {"purge"}, "id": {"p1"}})
	for _, token := range []string{"", "forged"} {
		form := url.Values{"pending": {pending}}
		if token != "" {
			form.Set("csrf", token)
		}
		r := b.do(t, http.MethodPost, "/dlq/orders.dlq/execute", form, true)
		require.Equal(t, http.StatusForbidden, r.status)
		require.Contains(t, r.body, "no valid CSRF token")
		r = b.do(t, http.MethodPost, "/dlq/orders.dlq/confirm", url.Values{"action": {"purge"}, "id": {"p2"}, "csrf": {token}}, true)
		require.Equal(t, http.StatusForbidden, r.status)
	}
	recs, err := b.res.Resolutions(context.Background(), testDLQ)
	require.NoError(t, err)
	require.Empty(t, recs, "nothing was purged")
	// Another operator's token is not this one's.
	require.NotEqual(t, b.h.csrfToken("alice"), b.h.csrfToken("bob"))
}

func TestAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	r := b.do(t, http.MethodGet, "/", nil, false)
	require.Equal(t, http.StatusUnauthorized, r.status)
	require.Contains(t, r.header.Get("WWW-Authenticate"), "Basic")
	req := func(h http.Handler, mod func(*http.Request)) int {
		rq, _ := http.NewRequest(http.MethodGet, "http://localhost/", nil)
		mod(rq)
		w := &recorder{header: http.Header{}}
		h.ServeHTTP(w, rq)
		return w.status
	}
	require.Equal(t, http.StatusUnauthorized, req(b.h, func(r *http.Request) { r.SetBasicAuth(testUser, "wrong") }))
	require.Equal(t, http.StatusUnauthorized, req(b.h, func(r *http.Request) { r.SetBasicAuth("mallory", testPass) }))
	require.Equal(t, http.StatusOK, req(b.h, func(r *http.Request) { r.SetBasicAuth(testUser, testPass) }))

	tb := setup(t, func(c *Config) { c.Auth = Auth{BearerToken: "tok-123"}; c.Operator = "ops-team" })
	require.Equal(t, http.StatusUnauthorized, req(tb.h, func(*http.Request) {}))
	require.Equal(t, http.StatusUnauthorized, req(tb.h, func(r *http.Request) { r.Header.Set("Authorization", "Bearer tok-12") }))
	require.Equal(t, http.StatusOK, req(tb.h, func(r *http.Request) { r.Header.Set("Authorization", "Bearer tok-123") }))
}

type recorder struct {
	header http.Header
	status int
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(p []byte) (int, error) { return len(p), nil }
func (r *recorder) WriteHeader(s int)           { r.status = s }

func TestUnauthenticated(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"127.0.0.1:8080", "[::1]:8080", "localhost:8080", "127.0.0.2:1"} {
		b := setup(t, func(c *Config) { c.Auth = Auth{Unauthenticated: true}; c.Addr = addr })
		require.NotNil(t, b.h, addr)
	}
	for _, addr := range []string{"", ":8080", "0.0.0.0:8080", "192.168.1.4:8080", "example.com:80", "[::]:8080"} {
		_, err := New(Config{
			DLQs: []string{"d"}, Source: newFakeSource(), Resolutions: setup(t, nil).res, ReadOnly: true,
			Auth: Auth{Unauthenticated: true}, Addr: addr,
		})
		require.ErrorIs(t, err, ErrInvalidConfig, addr)
		require.Contains(t, err.Error(), "loopback", addr)
	}
	b := setup(t, func(c *Config) {
		c.Auth = Auth{Unauthenticated: true}
		c.Addr = "127.0.0.1:8080"
		c.Operator = "oncall"
	})
	for host, want := range map[string]int{
		"localhost:8080": http.StatusOK, "127.0.0.1:8080": http.StatusOK, "[::1]:8080": http.StatusOK, "LOCALHOST": http.StatusOK,
		"attacker.example:8080": http.StatusForbidden, "evil.localhost.example": http.StatusForbidden, "10.0.0.1:8080": http.StatusForbidden, "": http.StatusForbidden,
	} {
		rq, _ := http.NewRequest(http.MethodGet, "http://localhost/", nil)
		rq.Host = host
		w := &recorder{header: http.Header{}}
		b.h.ServeHTTP(w, rq)
		require.Equal(t, want, w.status, "Host %q", host)
	}
	// The operator of an unauthenticated console is Config.Operator.
	b.refresh(t)
	rq, _ := http.NewRequest(http.MethodGet, "http://localhost/", nil)
	rec := httptest.NewRecorder()
	b.h.ServeHTTP(rec, rq)
	require.Contains(t, rec.Body.String(), "Acting as <strong>oncall</strong>")
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.ReadOnly = true; c.Publisher = nil })
	b.refresh(t)
	for _, page := range []string{"/", "/dlq/orders.dlq", "/dlq/orders.dlq/entry?id=p1"} {
		r := b.get(t, page)
		require.Equal(t, http.StatusOK, r.status)
		require.Contains(t, r.body, "read-only")
		require.NotContains(t, r.body, "<button name=\"action\"", page)
		require.NotContains(t, r.body, `method="post"`, page)
	}
	r := b.do(t, http.MethodPost, "/dlq/orders.dlq/confirm", url.Values{"action": {"purge"}, "id": {"p1"}, "csrf": {b.h.csrfToken(testUser)}}, true)
	require.Equal(t, http.StatusForbidden, r.status)
	require.Contains(t, r.body, "read-only")
}

// An unreachable broker gives pages that say so: never a 500, never a
// stack, never a password.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.src.setUnreachable(true)
	err := b.h.Refresh(context.Background())
	require.ErrorIs(t, err, errUnreachable)
	r := b.get(t, "/")
	require.Equal(t, http.StatusOK, r.status)
	require.Contains(t, r.body, "The last index refresh failed")
	require.Contains(t, r.body, "connection refused")
	for _, page := range []string{"/dlq/orders.dlq/entry?id=p1"} {
		r = b.get(t, page)
		require.Equal(t, http.StatusServiceUnavailable, r.status, page)
		require.Contains(t, r.body, "unreachable")
	}
	b.src.setUnreachable(false)
	b.refresh(t)
	b.src.setUnreachable(true)
	r = b.post(t, "/dlq/orders.dlq/confirm", url.Values{"action": {"replay"}, "id": {"p1"}})
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.Contains(t, r.body, "admin:xxxxx@")
	for _, body := range []string{r.body, b.get(t, "/").body} {
		require.NotContains(t, body, "hunter2")
		require.NotContains(t, body, "goroutine")
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ok := Config{DLQs: []string{"d"}, Source: b.src, Resolutions: b.res, Publisher: b.pub, Auth: Auth{BasicUser: "u", BasicPassword: "p"}}
	require.NoError(t, ok.Validate())
	for want, mutate := range map[string]func(*Config){
		"DLQs is required":        func(c *Config) { c.DLQs = nil },
		"listed twice":            func(c *Config) { c.DLQs = []string{"d", "d"} },
		"DLQs[0]":                 func(c *Config) { c.DLQs = []string{""} },
		"Source is required":      func(c *Config) { c.Source = nil },
		"Resolutions is required": func(c *Config) { c.Resolutions = nil },
		"Publisher is required":   func(c *Config) { c.Publisher = nil },
		"Auth is required":        func(c *Config) { c.Auth = Auth{} },
		"choose one":              func(c *Config) { c.Auth.BearerToken = "t" },
		"needs both":              func(c *Config) { c.Auth.BasicPassword = "" },
		"colon":                   func(c *Config) { c.Auth.BasicUser = "a:b" },
		"PageSize":                func(c *Config) { c.PageSize = 501 },
		"MaxReplays":              func(c *Config) { c.MaxReplays = -1 },
		"RefreshInterval":         func(c *Config) { c.RefreshInterval = -time.Second },
		"Operator is":             func(c *Config) { c.Operator = strings.Repeat("x", 300) },
	} {
		c := ok
		mutate(&c)
		err := c.Validate()
		require.ErrorIs(t, err, ErrInvalidConfig, want)
		require.Contains(t, err.Error(), want)
		_, err = New(c)
		require.ErrorIs(t, err, ErrInvalidConfig, want)
	}
}
