package metrics

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Namespace prefixes every metric name.
const Namespace = "idempo"

// DefaultBuckets are the histogram buckets, in seconds, used when
// [Options.Buckets] is empty: 1ms to 10s, fine enough for store calls (a few
// milliseconds) and for handlers (up to seconds). They are
// [prometheus.DefBuckets] with 1ms and 2.5ms added in front.
var DefaultBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Options configures [New]. A nil *Options means all defaults.
type Options struct {
	// Buckets are the upper bounds, in seconds, of the buckets of both
	// histograms (idempo_handler_duration_seconds and
	// idempo_store_operation_duration_seconds). They must be sorted in
	// increasing order. Defaults to [DefaultBuckets].
	Buckets []float64
	// ConstLabels are added to every series, e.g. {"service": "billing"}.
	// They must not use the names handler, topic, outcome or operation.
	// Defaults to none.
	ConstLabels prometheus.Labels
}

// ErrOptions is matched by every error [New] returns for invalid [Options].
var ErrOptions = errors.New("metrics: invalid options")

// ErrNoRegisterer is returned by [New] when reg is nil.
var ErrNoRegisterer = errors.New("metrics: nil Registerer (try prometheus.NewRegistry(), or pass prometheus.DefaultRegisterer to use the global registry)")

// reservedLabels are the variable label names; a const label may not reuse them.
var reservedLabels = []string{labelHandler, labelTopic, labelOutcome, labelOperation}

func (o *Options) withDefaults() Options {
	var out Options
	if o != nil {
		out = *o
	}
	if len(out.Buckets) == 0 {
		out.Buckets = DefaultBuckets
	}
	out.Buckets = slices.Clone(out.Buckets)
	return out
}

func (o *Options) validate() error {
	for i, b := range o.Buckets {
		if math.IsNaN(b) {
			return fmt.Errorf("%w: Buckets[%d] is NaN", ErrOptions, i)
		}
		if i > 0 && b <= o.Buckets[i-1] {
			return fmt.Errorf("%w: Buckets must be sorted in increasing order, got %v after %v", ErrOptions, b, o.Buckets[i-1])
		}
	}
	for name := range o.ConstLabels {
		if slices.Contains(reservedLabels, name) {
			return fmt.Errorf("%w: ConstLabels must not use the label name %q (it is a variable label)", ErrOptions, name)
		}
	}
	return nil
}
