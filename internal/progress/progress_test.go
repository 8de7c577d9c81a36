package progress_test

import (
	"context"
	"errors"
	"testing"

	"github.com/idempo/idempo/internal/progress"
)

func TestAttachFrom(t *testing.T) {
	if progress.From(context.Background()) != nil {
		t.Fatal("a bare context carries no touch")
	}
	if ctx := progress.Attach(context.Background(), nil); progress.From(ctx) != nil {
		t.Fatal("attaching nil must attach nothing")
	}
	want := errors.New("touched")
	ctx := progress.Attach(context.Background(), func(context.Context) error { return want })
	got := progress.From(ctx)
	if got == nil {
		t.Fatal("the attached touch is not found")
	}
	if err := got(ctx); !errors.Is(err, want) {
		t.Fatalf("From returned another function: %v", err)
	}
}
