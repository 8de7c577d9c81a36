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

	"github.com/idempo/idempo/dlq/dlqops"
)

// dlqReplay is idempo dlq replay.
type dlqReplay struct {
	dlqCommon
	dlqSelection
	jsonFlag
	dryRun bool
	to     string
	f      dlqops.Filter
}

func (*dlqReplay) usage() (string, string, string) {
	return "dlq replay", "idempo dlq replay --broker URL --store URL --topic DLQTOPIC (--id ID... | filters | --all-unresolved | --snapshot TOKEN) [--to TOPIC] [--dry-run]", `
Republishes unresolved entries to their original topic (or --to) with their
original UUID, payload and metadata, marked as a replay: the consumer's dedup
admits each replay once, and a repeated replay is a duplicate. An entry is
marked replayed only after the broker confirmed the republish, so a crash
leaves it unresolved, never lost. An event replayed --max-replays times goes
to the parking topic (the DLQ topic + ".parked") instead, as its dead-letter
copy: a DLQ like any other, whose replays go to the original topic. An entry that
cannot be replayed (e.g. no original topic and no --to) is reported and left
unresolved, the rest are replayed, and the exit status is 3. A dry run
prints a snapshot token: --snapshot TOKEN then replays exactly the entries
it counted.`
}

func (o *dlqReplay) flags(fs *flag.FlagSet) {
	o.targetFlags(fs)
	o.selectionFlags(fs, "replay")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print what would be replayed, and a snapshot token; change nothing")
	fs.StringVar(&o.to, "to", "", "publish every replay to this topic instead of each entry's original topic")
	o.operatorFlag(fs)
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
type replaySummary dlqops.Result

func (s replaySummary) text(w io.Writer) {
	if s.DryRun {
		fmt.Fprintf(w, "dry run: would replay %d, park %d, fail %d; nothing was changed\n", s.Replayed, s.Parked, s.Failed)
		if s.Skipped > 0 {
			fmt.Fprintf(w, "(%d held by another operator right now)\n", s.Skipped)
		}
		printSnapshot(w, "replay", s.Snapshot)
		return
	}
	fmt.Fprintf(w, "replayed %d, parked %d, skipped %d, failed %d\n", s.Replayed, s.Parked, s.Skipped, s.Failed)
}

func (o *dlqReplay) Run(ctx context.Context, e *env) (result, error) {
	progress := isTerminal(e.stderr)
	seen := map[string]bool{}
	opts := dlqops.ReplayOptions{To: o.to, DryRun: o.dryRun, Snapshot: o.snapshot, Progress: func(n int, en dlqops.Entry, a dlqops.Action) {
		seen[en.ID] = true
		if o.dryRun {
			if (a == dlqops.ActionReplay || a == dlqops.ActionPark) && !o.json {
				dest := o.to
				if dest == "" {
					dest = en.OriginalTopic
				}
				if a == dlqops.ActionPark {
					dest = dlqops.ParkingTopic(o.topic)
				}
				fmt.Fprintf(e.stdout, "would %s %s (event %s, replays %d) to %s\n", a, en.ID, dash(en.EventID), en.Replays, dest)
			}
			return
		}
		if progress {
			fmt.Fprintf(e.stderr, "\r%d entries: %-6s %s", n, a, en.ID)
		}
	}}
	res, err := e.ops.Replay(ctx, o.topic, o.f, opts)
	if errors.Is(err, dlqops.ErrSnapshot) {
		return nil, err // refused before anything was read: no counts
	}
	if progress && !o.dryRun && len(seen) > 0 {
		fmt.Fprintln(e.stderr)
	}
	printFailures(e.stderr, "replay", res.Failures)
	if err == nil {
		err = unmatchedIDs(ctx, e.ops, o.topic, o.ids, seen)
	}
	if err == nil && o.snapshot != "" && res.Replayed+res.Parked == 0 {
		err = snapshotSpent(res.Skipped)
	}
	return replaySummary(res), failuresAbove(err, res)
}

// operatorFlag adds --operator (replay and purge: the commands that
// record who acted).
func (c *dlqCommon) operatorFlag(fs *flag.FlagSet) {
	fs.StringVar(&c.operator, "operator", "", "`NAME` recorded as who resolved the entries (default $USER@hostname; without $USER the account's name)")
}

// dlqPurge is idempo dlq purge.
type dlqPurge struct {
	dlqCommon
	dlqSelection
	jsonFlag
	yes, dryRun bool
	f           dlqops.Filter
}

func (*dlqPurge) usage() (string, string, string) {
	return "dlq purge", "idempo dlq purge --broker URL --store URL --topic DLQTOPIC (--id ID... | filters | --all-unresolved | --snapshot TOKEN) [--dry-run] [--yes] [--json]", `
Marks unresolved entries purged, so that list no longer shows them (the DLQ
itself is append-only and keeps them until its retention ends). Asks
"Purge N entries? [y/N]" on the terminal unless --yes; without a terminal
it refuses unless --yes. It purges exactly the N entries it counted; a dry
run prints them and a snapshot token for --snapshot.`
}

func (o *dlqPurge) flags(fs *flag.FlagSet) {
	o.targetFlags(fs)
	o.selectionFlags(fs, "purge")
	fs.BoolVar(&o.yes, "yes", false, "do not ask for confirmation")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print what would be purged, and a snapshot token; change nothing")
	o.operatorFlag(fs)
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
	if !o.yes && !o.dryRun && !dlqStdinIsTerminal() {
		return errors.New("refusing to purge without confirmation: stdin is not a terminal (pass --yes)")
	}
	return nil
}

// purgeSummary is what purge prints at the end: the counts.
type purgeSummary dlqops.Result

func (s purgeSummary) text(w io.Writer) {
	if s.DryRun {
		fmt.Fprintf(w, "dry run: would purge %d, fail %d; nothing was changed\n", s.Purged, s.Failed)
		printSnapshot(w, "purge", s.Snapshot)
		return
	}
	fmt.Fprintf(w, "purged %d, skipped %d, failed %d\n", s.Purged, s.Skipped, s.Failed)
}

func (o *dlqPurge) Run(ctx context.Context, e *env) (result, error) {
	seen := map[string]bool{}
	dry, err := e.ops.Purge(ctx, o.topic, o.f, dlqops.PurgeOptions{DryRun: true, Snapshot: o.snapshot, Progress: func(_ int, en dlqops.Entry, a dlqops.Action) {
		seen[en.ID] = true
		if o.dryRun && a == dlqops.ActionPurge && !o.json {
			fmt.Fprintf(e.stdout, "would purge %s (event %s)\n", en.ID, dash(en.EventID))
		}
	}})
	if errors.Is(err, dlqops.ErrSnapshot) {
		return nil, err // refused before anything was read: no counts
	}
	if err != nil {
		printFailures(e.stderr, "purge", dry.Failures)
		return purgeSummary(dry), failuresAbove(err, dry)
	}
	if o.dryRun {
		err := unmatchedIDs(ctx, e.ops, o.topic, o.ids, seen)
		if err == nil && o.snapshot != "" && dry.Purged == 0 {
			err = snapshotSpent(dry.Skipped)
		}
		return purgeSummary(dry), err
	}
	if dry.Purged == 0 {
		if err := unmatchedIDs(ctx, e.ops, o.topic, o.ids, seen); err != nil {
			return nil, err
		}
		if o.snapshot != "" {
			return purgeSummary{Skipped: dry.Skipped}, snapshotSpent(dry.Skipped)
		}
		fmt.Fprintln(e.stdout, "nothing to purge")
		return nil, nil
	}
	if !o.yes {
		fmt.Fprintf(e.stderr, "Purge %d entries? [y/N] ", dry.Purged)
		answer, _ := bufio.NewReader(dlqStdin).ReadString('\n')
		switch strings.ToLower(strings.TrimSpace(answer)) {
		case "y", "yes":
		default:
			return nil, failed(errors.New("not purged"))
		}
	}
	// Only the entries counted above: one dead-lettered meanwhile waits.
	res, err := e.ops.Purge(ctx, o.topic, dlqops.Filter{}, dlqops.PurgeOptions{Snapshot: dry.Snapshot})
	printFailures(e.stderr, "purge", res.Failures)
	if err == nil {
		err = unmatchedIDs(ctx, e.ops, o.topic, o.ids, seen)
	}
	return purgeSummary(res), failuresAbove(err, res)
}

// printFailures reports each entry a replay or purge could not settle.
func printFailures(stderr io.Writer, cmd string, failures []*dlqops.EntryError) {
	for _, f := range failures {
		if errors.Is(f, dlqops.ErrNoDestination) {
			fmt.Fprintf(stderr, "idempo dlq %s: entry %s at %s has no original topic: replay it with --id %s --to TOPIC\n", cmd, f.ID, f.Position, f.ID)
			continue
		}
		fmt.Fprintf(stderr, "idempo dlq %s: %v\n", cmd, f)
	}
}

// failuresAbove shortens the error of a replay or purge that could not
// settle some entries, each reported by printFailures already.
func failuresAbove(err error, res dlqops.Result) error {
	if !errors.Is(err, dlqops.ErrEntriesFailed) {
		return err
	}
	n := res.Replayed + res.Parked + res.Purged + res.Skipped + res.Failed
	return fmt.Errorf("%w: %d of %d entries (each reported above)", dlqops.ErrEntriesFailed, res.Failed, n)
}

// snapshotSpent is the error of a --snapshot with nothing left to do:
// another operator resolved (or holds) each of its entries since.
func snapshotSpent(skipped int) error {
	return fmt.Errorf("%w: every entry of the snapshot (%d) was resolved since, or is held by another operator", errNothingToDo, skipped)
}

// printSnapshot prints a dry run's token and how to use it; nothing when
// the dry run counted no entry (no token).
func printSnapshot(w io.Writer, verb, token string) {
	if token == "" {
		return
	}
	fmt.Fprintf(w, "snapshot: %s\n(pass --snapshot %s to %s exactly these entries)\n", token, token, verb)
}

// unmatchedIDs explains the given IDs that no unresolved entry matched.
func unmatchedIDs(ctx context.Context, ops *dlqops.Ops, topic string, ids []string, seen map[string]bool) error {
	var problems []string
	notFound := false
	for _, id := range ids {
		if seen[id] {
			continue
		}
		e, err := ops.Show(ctx, topic, id)
		switch {
		case errors.Is(err, dlqops.ErrNotFound):
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
		return fmt.Errorf("%w: %s", dlqops.ErrNotFound, strings.Join(problems, "; "))
	}
	return fmt.Errorf("%w: %s", errNothingToDo, strings.Join(problems, "; "))
}
