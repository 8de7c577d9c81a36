// Command exportcount counts the public surface of idempo's core packages:
// exported top-level names (functions, types, variables, constants) plus the
// exported methods of exported types, in non-test files.
//
//	go run ./scripts/exportcount            # the core packages, one line each and a total,
//	                                        # then every other public package and the module's total
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
	if len(dirs) > 0 {
		fmt.Printf("%5d  total\n", count(dirs, *verbose))
		return
	}
	fmt.Printf("%5d  total of the core packages\n\n", count(core, *verbose))
	others, err := otherPublic(".")
	if err != nil {
		fail(err)
	}
	n := count(others, *verbose)
	fmt.Printf("%5d  total of the other public packages\n", n)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "exportcount:", err)
	os.Exit(1)
}

// count prints each package's count (and names if verbose) and returns the sum.
func count(dirs []string, verbose bool) int {
	total := 0
	for _, dir := range dirs {
		names, err := exported(dir)
		if err != nil {
			fail(err)
		}
		total += len(names)
		fmt.Printf("%5d  %s\n", len(names), dir)
		if verbose {
			for _, n := range names {
				fmt.Printf("         %s\n", n)
			}
		}
	}
	return total
}

// otherPublic lists the directories under root holding an importable
// package that is not core: no internal, cmd, examples, scripts or testdata
// path element.
func otherPublic(root string) ([]string, error) {
	isCore := map[string]bool{}
	for _, c := range core {
		isCore[c] = true
	}
	var dirs []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		switch d.Name() {
		case "internal", "cmd", "examples", "scripts", "testdata", ".git", "node_modules":
			return filepath.SkipDir
		}
		if path == root || isCore[filepath.ToSlash(path)] {
			return nil
		}
		files, _ := filepath.Glob(filepath.Join(path, "*.go"))
		for _, f := range files {
			if !strings.HasSuffix(f, "_test.go") {
				dirs = append(dirs, filepath.ToSlash(path))
				break
			}
		}
		return nil
	})
	return dirs, err
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
