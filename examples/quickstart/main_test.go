package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// runEnv makes the re-executed test binary run the program instead of the
// tests.
const runEnv = "IDEMPO_QUICKSTART_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runEnv) != "" {
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

// repoRoot is the module's root directory, two levels up.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	return root
}

// readmeQuickstart returns the README's Quickstart section's program (the
// ```go block) and the output it shows (the ```text block).
func readmeQuickstart(t *testing.T) (program, output string) {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	require.NoError(t, err)
	section := regexp.MustCompile("(?s)\n## Quickstart\n(.*?)(\n## |$)").FindSubmatch(readme)
	require.NotNil(t, section, "README.md has no Quickstart section")
	blocks := map[string]string{}
	for _, b := range regexp.MustCompile("(?s)\n```(go|text)\n(.*?)```\n").FindAllSubmatch(section[1], -1) {
		lang := string(b[1])
		_, dup := blocks[lang]
		require.False(t, dup, "the Quickstart section has more than one ```%s block", lang)
		blocks[lang] = string(b[2])
	}
	program, ok := blocks["go"]
	require.True(t, ok, "the Quickstart section has no ```go block")
	output, ok = blocks["text"]
	require.True(t, ok, "the Quickstart section has no ```text block (the program's output)")
	return program, output
}

// The README's quickstart is this program, byte for byte.
func TestREADMEShowsThisProgram(t *testing.T) {
	t.Parallel()
	program, _ := readmeQuickstart(t)
	source, err := os.ReadFile("main.go")
	require.NoError(t, err)
	if program != string(source) {
		readme, example := strings.Split(program, "\n"), strings.Split(string(source), "\n")
		for i := range min(len(readme), len(example)) {
			if readme[i] != example[i] {
				require.FailNowf(t, "the README's quickstart is not examples/quickstart/main.go",
					"first difference at line %d:\nREADME:  %q\nmain.go: %q", i+1, readme[i], example[i])
			}
		}
		require.FailNowf(t, "the README's quickstart is not examples/quickstart/main.go",
			"README: %d lines, main.go: %d lines", len(readme), len(example))
	}
}

// The program prints, on stdout, exactly the output the README shows, exits
// with 0, and its stderr carries the stack's warning about a GoChannel DLQ.
func TestOutputIsTheREADMEs(t *testing.T) {
	t.Parallel()
	_, want := readmeQuickstart(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), runEnv+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "the program did not end within 2 minutes; stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	require.NoError(t, err, "stderr:\n%s", &stderr)
	require.Equal(t, want, stdout.String())
	require.Contains(t, stderr.String(), "DLQ publisher is an in-process GoChannel")
}

// The README's program builds as pasted into an empty module that requires
// idempo (here the working copy, through a replace directive). It needs no
// network: every dependency is idempo's own, already in the module cache, and
// their checksums are idempo's go.sum.
func TestREADMEBuildsInAnEmptyModule(t *testing.T) {
	t.Parallel()
	program, _ := readmeQuickstart(t)
	root := repoRoot(t)
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	goLine := regexp.MustCompile(`(?m)^go \S+$`).Find(goMod)
	require.NotNil(t, goLine, "go.mod has no go line")
	goSum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	require.NoError(t, err)

	dir := t.TempDir()
	mod := "module shop\n\n" + string(goLine) + "\n\n" +
		"require github.com/idempo/idempo v0.0.0-00010101000000-000000000000\n\n" +
		"replace github.com/idempo/idempo => " + root + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.sum"), goSum, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(program), 0o600))

	goCmd, err := exec.LookPath("go")
	require.NoError(t, err, "the go command is needed to build the README's program")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goCmd, "build", "-o", filepath.Join(dir, "shop"), ".")
	build.Dir = dir
	// -mod=mod lets go add the requirements the program imports directly
	// (watermill), as go mod tidy would, from idempo's own module graph.
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	out, err := build.CombinedOutput()
	require.NoError(t, ctx.Err(), "go build did not end within 5 minutes:\n%s", out)
	require.NoError(t, err, "the README's quickstart does not build in an empty module:\n%s", out)
	require.FileExists(t, filepath.Join(dir, "shop"))
}
