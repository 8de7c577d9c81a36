package dlqops

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// A filter of many IDs (matched through a set) matches as Match does.
func TestMatcherOfManyIDs(t *testing.T) {
	t.Parallel()
	var ids []string
	for i := range 40 {
		ids = append(ids, "e"+strconv.Itoa(i))
	}
	for _, f := range []Filter{{IDs: ids}, {IDs: ids, Handler: "h"}, {IDs: ids[:3]}} {
		m := f.matcher()
		for _, e := range []Entry{{ID: "e7", Handler: "h"}, {ID: "e39"}, {ID: "x"}, {ID: "e2", Handler: "other"}, {ID: "e39", Handler: "h"}} {
			require.Equal(t, f.Match(e), m(e), "%+v against %+v", e, f)
		}
	}
}
