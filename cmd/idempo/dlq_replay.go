package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/idempo/idempo/dlq"
)

// dlqReplay is idempo dlq replay.
type dlqReplay struct {
	dlqCommon
	dlqSelection
	jsonFlag
	dryRun bool
	to     string
	f      dlq.Filter
}

func (*dlqReplay) usage() (string, string, string) {
	return "dlq replay", "idempo dlq replay --broker URL --store URL --topic DLQTOPIC (--id ID... | filters | --all-unresolved) [--to TOPIC] [--dry-run]", `
Republishes unresolved entries to their original topic (or --to) with their
original UUID, payload and metadata, marked as a replay: the consumer's dedup
admits each replay once, and a repeated replay is a duplicate. An entry is
marked replayed only after the broker confirmed the republish, so a crash
leaves it unresolved, never lost. An event replayed --max-replays times goes
to the parking topic (the DLQ topic + ".parked") instead. An entry that
cannot be replayed (e.g. no original topic and no --to) is reported and left
unresolved, the rest are replayed, and the exit status is 3.`
}

func (o *dlqReplay) flags(fs *flag.FlagSet) {
	o.targetFlags(fs)
	o.selectionFlags(fs, "replay")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print what would be replayed; change nothing")
	fs.StringVar(&o.to, "to", "", "publish every replay to this topic instead of each entry's original topic")
	o.registerJSON(fs, "print the counts as one JSON object")
}

func (o *dlqReplay) args(pos []string) error { return noArgs(pos) }

func (o *dlqReplay) Validate() (err error) {
	if err := o.validateTarget(); err != nil {
		return err
	}
	o.replay = !o.dryRun
	o.f, err = o.selection(time.Now())
	return err
}

// replaySummary is what replay prints at the end: the counts.
type replaySummary struct {
	dlq.ReplayResult
	DryRun bool `json:"dry_run"`
}

func (s replaySummary) text(w io.Writer) {
	if s.DryRun {
		fmt.Fprintf(w, "dry run: would replay %d, park %d, fail %d; nothing was changed\n", s.Replayed, s.Parked, s.Failed)
		return
	}
	fmt.Fprintf(w, "replayed %d, parked %d, skipped %d, failed %d\n", s.Replayed, s.Parked, s.Skipped, s.Failed)
}

func (o *dlqReplay) Run(ctx context.Context, e *env) (result, error) {
	progress := isTerminal(e.stderr)
	seen := map[string]bool{}
	would := map[string]int{}
	opts := dlq.ReplayOptions{To: o.to, DryRun: o.dryRun, Progress: func(n int, en dlq.Entry, action string) {
		seen[en.ID] = true
		if o.dryRun && action != "failed" {
			kind := strings.TrimPrefix(action, "dry-run ")
			would[kind]++
			dest := o.to
			if dest == "" {
				dest = en.OriginalTopic
			}
			if kind == "park" {
				dest = o.topic + ".parked"
			}
			if !o.json {
				fmt.Fprintf(e.stdout, "would %s %s (event %s, replays %d) to %s\n", kind, en.ID, dash(en.EventID), en.Replays, dest)
			}
			return
		}
		if progress {
			fmt.Fprintf(e.stderr, "\r%d entries: %-6s %s", n, action, en.ID)
		}
	}}
	res, err := e.ops.Replay(ctx, o.topic, o.f, opts)
	if progress && !o.dryRun && len(seen) > 0 {
		fmt.Fprintln(e.stderr)
	}
	if o.dryRun {
		res = dlq.ReplayResult{Replayed: would["replay"], Parked: would["park"], Failed: res.Failed, Failures: res.Failures}
	}
	printFailures(e.stderr, "replay", res.Failures)
	if err == nil {
		err = unmatchedIDs(ctx, e.ops, o.topic, o.ids, seen)
	}
	return replaySummary{res, o.dryRun}, err
}

// dlqPurge is idempo dlq purge.
type dlqPurge struct {
	dlqCommon
	dlqSelection
	jsonFlag
	yes bool
	f   dlq.Filter
}

func (*dlqPurge) usage() (string, string, string) {
	return "dlq purge", "idempo dlq purge --broker URL --store URL --topic DLQTOPIC (--id ID... | filters | --all-unresolved) [--yes] [--json]", `
Marks unresolved entries purged, so that list no longer shows them (the DLQ
itself is append-only and keeps them until its retention ends). Asks
"Purge N entries? [y/N]" on the terminal unless --yes; without a terminal
it refuses unless --yes.`
}

func (o *dlqPurge) flags(fs *flag.FlagSet) {
	o.targetFlags(fs)
	o.selectionFlags(fs, "purge")
	fs.BoolVar(&o.yes, "yes", false, "do not ask for confirmation")
	o.registerJSON(fs, "print the counts as one JSON object")
}

func (o *dlqPurge) args(pos []string) error { return noArgs(pos) }

func (o *dlqPurge) Validate() (err error) {
	if err := o.validateTarget(); err != nil {
		return err
	}
	if o.f, err = o.selection(time.Now()); err != nil {
		return err
	}
	if !o.yes && !dlqStdinIsTerminal() {
		return errors.New("refusing to purge without confirmation: stdin is not a terminal (pass --yes)")
	}
	return nil
}

// purgeSummary is what purge prints at the end: the counts.
type purgeSummary dlq.ReplayResult

func (s purgeSummary) text(w io.Writer) {
	fmt.Fprintf(w, "purged %d, skipped %d, failed %d\n", s.Purged, s.Skipped, s.Failed)
}

func (o *dlqPurge) Run(ctx context.Context, e *env) (result, error) {
	var ids []string
	seen := map[string]bool{}
	if err := e.ops.List(ctx, o.topic, o.f, func(en dlq.Entry) error {
		if !seen[en.ID] {
			seen[en.ID] = true
			ids = append(ids, en.ID)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		if err := unmatchedIDs(ctx, e.ops, o.topic, o.ids, seen); err != nil {
			return nil, err
		}
		fmt.Fprintln(e.stdout, "nothing to purge")
		return nil, nil
	}
	if !o.yes {
		fmt.Fprintf(e.stderr, "Purge %d entries? [y/N] ", len(ids))
		answer, _ := bufio.NewReader(dlqStdin).ReadString('\n')
		switch strings.ToLower(strings.TrimSpace(answer)) {
		case "y", "yes":
		default:
			return nil, failed(errors.New("not purged"))
		}
	}
	// Only the entries counted above: one dead-lettered meanwhile waits.
	res, err := e.ops.Purge(ctx, o.topic, dlq.Filter{IDs: ids}, dlq.ReplayOptions{})
	printFailures(e.stderr, "purge", res.Failures)
	if err == nil {
		err = unmatchedIDs(ctx, e.ops, o.topic, o.ids, seen)
	}
	return purgeSummary(res), err
}

// printFailures reports each entry a replay or purge could not settle.
func printFailures(stderr io.Writer, cmd string, failures []*dlq.EntryError) {
	for _, f := range failures {
		fmt.Fprintf(stderr, "idempo dlq %s: %v\n", cmd, f)
	}
}

// unmatchedIDs explains the given IDs that no unresolved entry matched.
func unmatchedIDs(ctx context.Context, ops *dlq.Ops, topic string, ids []string, seen map[string]bool) error {
	var problems []string
	notFound := false
	for _, id := range ids {
		if seen[id] {
			continue
		}
		e, err := ops.Show(ctx, topic, id)
		switch {
		case errors.Is(err, dlq.ErrNotFound):
			notFound = true
			problems = append(problems, fmt.Sprintf("%q in %s", id, topic))
		case err != nil:
			return err
		default:
			problems = append(problems, fmt.Sprintf("%q is already %s", id, e.Resolution))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	if notFound {
		return fmt.Errorf("%w: %s", dlq.ErrNotFound, strings.Join(problems, "; "))
	}
	return fmt.Errorf("%w: %s", errNothingToDo, strings.Join(problems, "; "))
}
