package outbox

import (
	"testing"

	"go.opentelemetry.io/otel/trace/noop"
)

// FuzzDecodeMetadata: a stored metadata column never panics the relay, and
// what decodes encodes back to the same map.
func FuzzDecodeMetadata(f *testing.F) {
	for _, s := range []string{"", "{}", `{"a":"b"}`, `{"a":1}`, `null`, `[`, `{"\u0000":"\ud800"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		md, err := decodeMetadata(s)
		if err != nil {
			return
		}
		again, err := decodeMetadata(encodeMetadata(md))
		if err != nil {
			t.Fatalf("re-decoding %q: %v", encodeMetadata(md), err)
		}
		if len(again) != len(md) {
			t.Fatalf("round trip changed %v into %v", md, again)
		}
		for k, v := range md {
			if again[k] != v {
				t.Fatalf("round trip changed %q: %q into %q", k, v, again[k])
			}
		}
	})
}

// FuzzRowMessage: any stored traceparent and metadata give a message (or
// a permanent error), never a panic; a bad traceparent starts a new trace.
func FuzzRowMessage(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", `{"k":"v"}`)
	f.Add("zz", "{")
	f.Add("", "")
	r := &Relay{tracer: noop.NewTracerProvider().Tracer("fuzz")}
	f.Fuzz(func(t *testing.T, tp, md string) {
		m, span, err := r.message(row{id: 1, uuid: "u", topic: "t", traceparent: tp, metadata: md})
		if err != nil {
			var p permanent
			if !asPermanent(err, &p) {
				t.Fatalf("non-permanent error %v", err)
			}
			return
		}
		span.End()
		if m.UUID != "u" {
			t.Fatalf("UUID %q", m.UUID)
		}
	})
}

func asPermanent(err error, p *permanent) bool {
	e, ok := err.(permanent) //nolint:errorlint // message returns it unwrapped
	if ok {
		*p = e
	}
	return ok
}
