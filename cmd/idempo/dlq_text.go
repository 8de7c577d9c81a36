package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/internal/dlqmeta"
)

// shownEntry is the JSON form of idempo dlq show.
type shownEntry struct {
	dlqops.Entry
	Metadata        map[string]string `json:"metadata"`
	Payload         string            `json:"payload"`
	PayloadEncoding string            `json:"payload_encoding"`
	// History lists the other entries of the same event and scope (earlier
	// or later replay cycles), oldest first.
	History []dlqops.Entry `json:"history"`
}

func (s *shownEntry) text(w io.Writer) {
	e := s.Entry
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("entry", e.ID)
	row("status", status(e, false))
	if e.ResolvedBy != "" {
		row("resolved by", e.ResolvedBy+" at "+fmtTime(e.ResolvedAt))
	}
	row("dlq", e.Topic+" @ "+e.Position)
	row("original topic", dash(e.OriginalTopic))
	row("original uuid", dash(e.OriginalUUID))
	row("event id", dash(e.EventID))
	row("handler", dash(e.Handler)+" (scope "+dash(e.Scope)+")")
	row("reason", dash(e.Reason))
	row("error class", dash(e.ErrorClass))
	row("error", dash(e.Error))
	row("attempts", fmt.Sprint(e.Attempts))
	row("deliveries", fmt.Sprint(e.Deliveries))
	row("replays", fmt.Sprint(e.Replays))
	row("first failure", fmtTime(e.FirstFailure))
	row("last failure", fmtTime(e.LastFailure))
	row("dead-lettered at", fmtTime(e.DeadLetteredAt))
	for _, p := range e.Problems {
		row("problem", p)
	}
	_ = tw.Flush()
	others := "other entries"
	if len(s.History) == 1 {
		others = "other entry"
	}
	fmt.Fprintf(w, "\nfailure history (%d %s of this event)\n", len(s.History), others)
	if len(s.History) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tDEAD-LETTERED\tREPLAYS\tREASON\tSTATUS\tERROR")
		for _, h := range s.History {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\n", h.ID, fmtTime(h.DeadLetteredAt), h.Replays, dash(h.Reason), status(h, false), dash(oneLine(h.Error, 60)))
		}
		_ = tw.Flush()
	}
	if stack := s.Metadata[dlqmeta.KeyPanicStack]; stack != "" {
		fmt.Fprintf(w, "\npanic stack\n%s\n", stack)
	}
	keys := make([]string, 0, len(s.Metadata))
	for k := range s.Metadata {
		if k != dlqmeta.KeyPanicStack {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	fmt.Fprintf(w, "\nmetadata (%d keys)\n", len(keys))
	for _, k := range keys {
		fmt.Fprintf(w, "  %s = %s\n", k, oneLine(s.Metadata[k], 200))
	}
	fmt.Fprintf(w, "\npayload (%d bytes, %s)\n%s\n", len(e.Message.Payload), s.PayloadEncoding, s.Payload)
}

// status is an entry's resolution, "unresolved" when it has none; with
// markProblems, " (!)" follows when the entry has problems.
func status(e dlqops.Entry, markProblems bool) string {
	s := e.Resolution
	if s == "" {
		s = "unresolved"
	}
	if markProblems && len(e.Problems) > 0 {
		s += " (!)"
	}
	return s
}

func payloadText(b []byte) (string, string) {
	if utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool { return r < 0x20 && r != '\n' && r != '\r' && r != '\t' }) {
		return string(b), "text"
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
