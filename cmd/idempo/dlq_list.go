package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/idempo/idempo/dlq/dlqops"
)

// dlqList is idempo dlq list.
type dlqList struct {
	dlqCommon
	dlqFilters
	all, asJSON, asTable bool
	f                    dlqops.Filter
}

func (*dlqList) usage() (string, string, string) {
	return "dlq list", "idempo dlq list --broker URL --store URL --topic DLQTOPIC [filters]", `
Lists unresolved dead letters, oldest first, without consuming anything: a
table on a terminal, otherwise one JSON object per line.`
}

func (o *dlqList) flags(fs *flag.FlagSet) {
	o.targetFlags(fs)
	o.filterFlags(fs)
	fs.BoolVar(&o.all, "all", false, "include resolved (replayed, purged) entries")
	fs.BoolVar(&o.asJSON, "json", false, "print JSON lines even on a terminal")
	fs.BoolVar(&o.asTable, "table", false, "print a table even when not on a terminal")
}

func (o *dlqList) args(pos []string) error {
	if len(pos) > 0 {
		return fmt.Errorf("unexpected arguments %q", pos)
	}
	return nil
}

func (o *dlqList) Validate() (err error) {
	if err := o.validateTarget(); err != nil {
		return err
	}
	o.f, err = o.filter(time.Now())
	o.f.All = o.all
	return err
}

func (o *dlqList) Run(ctx context.Context, e *env) (result, error) {
	table := o.asTable || (!o.asJSON && isTerminal(e.stdout))
	var tw *tabwriter.Writer
	enc := json.NewEncoder(e.stdout)
	if table {
		tw = tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tDEAD-LETTERED\tORIGINAL-TOPIC\tHANDLER\tREASON\tREPLAYS\tSTATUS\tERROR")
	}
	n := 0
	err := e.ops.List(ctx, o.topic, o.f, func(en dlqops.Entry) error {
		n++
		if !table {
			return enc.Encode(en)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", en.ID, fmtTime(en.DeadLetteredAt), dash(en.OriginalTopic), dash(en.Handler),
			dash(en.Reason), en.Replays, status(en, true), dash(oneLine(en.Error, 60)))
		return nil
	})
	if tw != nil {
		_ = tw.Flush()
		what := "unresolved entries"
		if o.all {
			what = "entries"
		}
		fmt.Fprintf(e.stdout, "%d %s in %s\n", n, what, o.topic)
	}
	if err != nil {
		return nil, err
	}
	if n == 0 && len(o.f.IDs) > 0 {
		return nil, fmt.Errorf("%w: %s in %s", dlqops.ErrNotFound, strings.Join(o.f.IDs, ", "), o.topic)
	}
	return nil, nil
}

// dlqShow is idempo dlq show.
type dlqShow struct {
	dlqCommon
	jsonFlag
	id string
}

func (*dlqShow) usage() (string, string, string) {
	return "dlq show", "idempo dlq show ID --broker URL --store URL --topic DLQTOPIC [--json]", `
Shows one entry: where it came from, why it failed, its failure history
(every entry of the same event: one per replay cycle), its metadata and
its payload.`
}

func (o *dlqShow) flags(fs *flag.FlagSet) {
	o.targetFlags(fs)
	o.registerJSON(fs, "print one JSON object")
}

func (o *dlqShow) args(pos []string) error {
	if len(pos) != 1 {
		return fmt.Errorf("want exactly one entry ID, got %d arguments", len(pos))
	}
	o.id = pos[0]
	return nil
}

func (o *dlqShow) Validate() error { return o.validateTarget() }

func (o *dlqShow) Run(ctx context.Context, e *env) (result, error) {
	en, err := e.ops.Show(ctx, o.topic, o.id)
	if err != nil {
		return nil, err
	}
	out := &shownEntry{Entry: en, Metadata: map[string]string(en.Message.Metadata), History: []dlqops.Entry{}}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	out.Payload, out.PayloadEncoding = payloadText(en.Message.Payload)
	if en.EventID == "" {
		return out, nil
	}
	err = e.ops.List(ctx, o.topic, dlqops.Filter{All: true}, func(other dlqops.Entry) error {
		if other.ID != en.ID && other.EventID == en.EventID && other.Scope == en.Scope {
			out.History = append(out.History, other)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
