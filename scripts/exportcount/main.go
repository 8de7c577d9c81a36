// Command exportcount counts the public surface of idempo's core packages:
// exported top-level names (functions, types, variables, constants) plus the
// exported methods of exported types, in non-test files.
//
//	go run ./scripts/exportcount            # the core packages, one line each and a total
//	go run ./scripts/exportcount -v DIR...  # the names too
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// core is what users import to wire a consumer.
var core = []string{"middleware", "dedup", "retry", "dlq", "broker/kafka", "broker/amqp"}

func main() {
	verbose := flag.Bool("v", false, "list the names")
	flag.Parse()
	dirs := flag.Args()
	if len(dirs) == 0 {
		dirs = core
	}
	total := 0
	for _, dir := range dirs {
		names, err := exported(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "exportcount:", err)
			os.Exit(1)
		}
		total += len(names)
		fmt.Printf("%5d  %s\n", len(names), dir)
		if *verbose {
			for _, n := range names {
				fmt.Printf("         %s\n", n)
			}
		}
	}
	fmt.Printf("%5d  total\n", total)
}

// exported returns the exported names of the package in dir, sorted.
func exported(dir string) ([]string, error) {
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	var names []string
	exportedTypes := map[string]bool{}
	type method struct{ recv, name string }
	var methods []method
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() {
					continue
				}
				if d.Recv == nil {
					names = append(names, d.Name.Name)
					continue
				}
				methods = append(methods, method{recv: recvName(d.Recv.List[0].Type), name: d.Name.Name})
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							names = append(names, s.Name.Name)
							exportedTypes[s.Name.Name] = true
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								names = append(names, n.Name)
							}
						}
					}
				}
			}
		}
	}
	for _, m := range methods {
		if exportedTypes[m.recv] {
			names = append(names, m.recv+"."+m.name)
		}
	}
	sort.Strings(names)
	return names, nil
}

func recvName(e ast.Expr) string {
	switch t := e.(type) {
	case *ast.StarExpr:
		return recvName(t.X)
	case *ast.IndexExpr:
		return recvName(t.X)
	case *ast.IndexListExpr:
		return recvName(t.X)
	case *ast.Ident:
		return t.Name
	}
	return ""
}
