package backend

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Opening a broker or store is a plain switch over public constructors:
// importing this package registers nothing and changes no process-wide
// setting (go-redis's logger is the binary's own business, set in main).
func TestNoInitAndNoGlobalSettings(t *testing.T) {
	t.Parallel()
	entries, err := os.ReadDir(".")
	require.NoError(t, err)
	fset := token.NewFileSet()
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		require.NoError(t, err)
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				require.False(t, n.Recv == nil && n.Name.Name == "init", "%s: func init()", fset.Position(n.Pos()))
			case *ast.SelectorExpr:
				require.NotEqual(t, "SetLogger", n.Sel.Name, "%s: a process-wide logger set as a side effect", fset.Position(n.Pos()))
			}
			return true
		})
	}
}

// A broker opened for idempo dlq must hold dead letters: GoChannel and
// the embedded cluster are refused before anything is started.
func TestForDLQRefusesInProcessBrokers(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"gochannel", "kafka"} {
		spec, err := ParseBroker(raw)
		require.NoError(t, err)
		b, err := OpenBroker(context.Background(), spec, nil, ForDLQ(true))
		require.Error(t, err, raw)
		require.Nil(t, b, raw)
		require.Contains(t, err.Error(), "dead letters", raw)
	}
}
