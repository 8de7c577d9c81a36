package console

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// A chart is a small bar chart of the overview, drawn by the server as
// inline SVG (no script): how many entries of a DLQ were dead-lettered in
// each hour of the last day, or each day of the last week, resolved or not.
type chart struct {
	ID, Title string
	// Summary says in words what the bars show (the SVG's accessible name).
	Summary       string
	Width, Height int
	Bars          []bar
	Labels        []axisLabel
}

type bar struct {
	X, Y, W, H int
	Count      int
	// Title names the bar's period and count (a tooltip).
	Title string
}

type axisLabel struct {
	X    int
	Text string
}

const (
	chartBarsHeight = 48 // the tallest bar, in pixels
	chartLabels     = 14 // room under the bars for the labels
)

// chartSpan is one chart's buckets: n periods of step, the last one
// holding now.
type chartSpan struct {
	name, title string
	n           int
	step        time.Duration
	start       func(now time.Time) time.Time
	barW        int
	label       func(i int, t time.Time) string // "" for none
	period      func(t time.Time) string
}

var chartSpans = []chartSpan{
	{
		name: "hours", title: "Per hour, last 24 h (UTC)", n: 24, step: time.Hour, barW: 12,
		start: func(now time.Time) time.Time { return now.Truncate(time.Hour).Add(-23 * time.Hour) },
		label: func(i int, t time.Time) string {
			if i%6 == 0 {
				return t.Format("15:04")
			}
			return ""
		},
		period: func(t time.Time) string {
			return t.Format("01-02 15:04") + "–" + t.Add(time.Hour).Format("15:04") + "Z"
		},
	},
	{
		name: "days", title: "Per day, last 7 days (UTC)", n: 7, step: 24 * time.Hour, barW: 44,
		start: func(now time.Time) time.Time {
			return time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, -6)
		},
		label:  func(_ int, t time.Time) string { return t.Format("Mon 02") },
		period: func(t time.Time) string { return t.Format("Mon 2006-01-02") },
	},
}

// charts reads the counts of dlq's charts from the index in one query
// (per hour, since the first day's start).
func (h *Handler) charts(ctx context.Context, dlq string) ([]chart, error) {
	now := h.cfg.Now().UTC()
	from := now
	for _, s := range chartSpans {
		if st := s.start(now); st.Before(from) {
			from = st
		}
	}
	perHour, err := h.idx.hourly(ctx, dlq, from)
	if err != nil {
		return nil, err
	}
	out := make([]chart, 0, len(chartSpans))
	for _, s := range chartSpans {
		start := s.start(now)
		starts := make([]time.Time, s.n)
		per := make([]int, s.n)
		for i := range s.n {
			starts[i] = start.Add(time.Duration(i) * s.step)
		}
		for hr, n := range perHour {
			i := int((time.Duration(hr)*time.Hour - time.Duration(start.Unix())*time.Second) / s.step)
			switch {
			case hr < hourOf(start):
			case i >= s.n:
				per[s.n-1] += n // after now (another clock): the last period
			default:
				per[i] += n
			}
		}
		out = append(out, drawChart(dlq, s, starts, per))
	}
	return out, nil
}

// drawChart lays out the bars of counts per period starting at starts.
func drawChart(dlq string, s chartSpan, starts []time.Time, per []int) chart {
	highest, total, peak := 0, 0, 0
	for i, n := range per {
		total += n
		if n > highest {
			highest, peak = n, i
		}
	}
	gap := 2
	ch := chart{
		ID: s.name + "-" + dlq, Title: s.title,
		Width: len(per) * (s.barW + gap), Height: chartBarsHeight + chartLabels,
	}
	for i, n := range per {
		hgt := 1 // a zero still shows where its period is
		if highest > 0 && n > 0 {
			hgt = max(2, n*chartBarsHeight/highest)
		}
		x := i * (s.barW + gap)
		ch.Bars = append(ch.Bars, bar{
			X: x, Y: chartBarsHeight - hgt, W: s.barW, H: hgt, Count: n,
			Title: s.period(starts[i]) + ": " + plural(n, "failure"),
		})
		if l := s.label(i, starts[i]); l != "" {
			ch.Labels = append(ch.Labels, axisLabel{X: x, Text: l})
		}
	}
	ch.Summary = fmt.Sprintf("%s: %s in all", s.title, plural(total, "failure"))
	if highest > 0 {
		ch.Summary += fmt.Sprintf(", most in %s (%d)", s.period(starts[peak]), highest)
	}
	return ch
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}
