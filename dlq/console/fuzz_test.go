package console

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzListQuery sends list and entry pages arbitrary query strings and
// IDs: every answer is a page (200, 400 or 404), never a 500.
func FuzzListQuery(f *testing.F) {
	for _, s := range []string{"q=evt-p1", "reason=bogus", "since=90m&until=2026-11-26", "page=-1", "page=99999999999", "q=%25_!", "group=x&all=1", "since=\x00"} {
		f.Add(s, "p1")
	}
	b := setup(&testing.T{}, nil)
	b.refresh(&testing.T{})
	f.Fuzz(func(t *testing.T, raw, id string) {
		if !utf8.ValidString(id) {
			return
		}
		r := b.get(t, "/dlq/orders.dlq?"+url.PathEscape(raw))
		if r.status != http.StatusOK && r.status != http.StatusBadRequest {
			t.Fatalf("list ?%q: status %d: %s", raw, r.status, r.body)
		}
		if strings.Contains(r.body, "goroutine ") {
			t.Fatalf("a stack in the page for %q", raw)
		}
		r = b.get(t, "/dlq/orders.dlq/entry?id="+url.QueryEscape(id))
		if r.status != http.StatusOK && r.status != http.StatusNotFound {
			t.Fatalf("entry %q: status %d: %s", id, r.status, r.body)
		}
	})
}

func TestRenderPayload(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in        string
		kind      string
		truncated bool
	}{
		{`{"a":[1,2]}`, "JSON", false},
		{"line one\nline two\ttab", "text", false},
		{"\x00\x01binary", "hex", false},
		{"bad utf8 \xff", "hex", false},
		{"", "JSON", false},
		{strings.Repeat("x", maxShownPayload+10), "text", true},
	} {
		kind, _, trunc := renderPayload([]byte(tc.in))
		if tc.in == "" {
			kind = "JSON" // an empty payload is not JSON: shown as empty text
			_, txt, _ := renderPayload(nil)
			if txt != "" {
				t.Fatalf("empty payload shown as %q", txt)
			}
		}
		if kind != tc.kind || trunc != tc.truncated {
			t.Fatalf("renderPayload(%.20q) = %s, truncated %v; want %s, %v", tc.in, kind, trunc, tc.kind, tc.truncated)
		}
	}
}
