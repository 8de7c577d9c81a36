package progress

import "context"

// Touch tells the broker that the message it was attached to is still
// being handled. It is called from the lease keeper's goroutine, never
// concurrently for one message, with a context bounded by the lease; an
// error is logged by the caller and otherwise ignored (the next extension
// tries again).
type Touch func(ctx context.Context) error

type key struct{}

// Attach returns a copy of ctx that carries touch. A nil touch returns ctx
// unchanged.
func Attach(ctx context.Context, touch Touch) context.Context {
	if touch == nil {
		return ctx
	}
	return context.WithValue(ctx, key{}, touch)
}

// From returns the Touch attached to ctx, or nil.
func From(ctx context.Context) Touch {
	t, _ := ctx.Value(key{}).(Touch)
	return t
}
