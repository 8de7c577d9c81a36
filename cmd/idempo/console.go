package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/idempo/idempo/cmd/idempo/internal/backend"
	"github.com/idempo/idempo/dlq/console"
	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution"
)

// consoleCommand serves the dead-letter console (package dlq/console).
type consoleCommand struct {
	broker, store   string
	topics          stringList
	topicSuffix     string
	addr            string
	readOnly        bool
	hidePayloads    bool
	unauthenticated bool
	basicUser       string
	basicPassEnv    string
	tokenEnv        string
	operator        string
	maxReplays      int
	refresh         time.Duration

	// auth is the authentication the flags chose, read from the
	// environment by Validate.
	auth console.Auth
	// listening, if set, is told the console's URL once it listens (tests).
	listening func(url string)
}

func (c *consoleCommand) usage() (name, synopsis, description string) {
	return "console", "idempo console --broker URL --store URL --topic DLQ [--topic DLQ…] [--addr 127.0.0.1:8080] [flags]",
		`Serves the dead-letter console: a web page where operators see what is
failing, grouped by reason, error class, handler and normalised error text,
search and filter entries, read one (payload on demand), and replay or purge
one entry, the selected ones or a whole group, after a dry run that counts
them and a confirmation that acts on exactly that set. Every action is
recorded in the resolution store (--store) with the operator's name, as
'idempo dlq' records its own.

The console keeps an index of each DLQ (entry metadata and group keys, not
payloads) in the resolution store's database (PostgreSQL, MySQL/MariaDB,
SQLite, or Redis under the prefix idempo:console:), and reads each DLQ from
where it stopped.

On Kafka, --topic-suffix .dlq shows every topic whose name ends so, as found
at start (RabbitMQ cannot list its queues without the management plugin:
name each DLQ with --topic).

Authentication is required: --basic-auth-user with the password in the
environment variable --basic-auth-password-env names, or a bearer token in
the variable --token-env names (for a proxy that adds the header), or
--unauthenticated, which is allowed only on a loopback --addr. The operator
of actions is the basic-auth user, else --operator (default $USER@host).

Exit status: 0 stopped by Ctrl-C or SIGTERM; 2 usage, setup or listen errors.`
}

func (c *consoleCommand) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.broker, "broker", "", "broker URL holding the DLQs: kafka://host:port[,host:port], amqp://user:pass@host:5672/ or nats://host:4222 (required)")
	fs.StringVar(&c.store, "store", "", "store URL holding the resolution records and the index: postgres://…, mysql://…, sqlite://PATH, redis://host:6379/0 (required)")
	fs.Var(&c.topics, "topic", "a DLQ topic (Kafka) or stream queue (RabbitMQ) to show, e.g. orders.dlq (repeatable; this or --topic-suffix is required)")
	fs.StringVar(&c.topicSuffix, "topic-suffix", "", "Kafka only: show every topic whose name ends with this `SUFFIX` (e.g. .dlq), as found at start")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "address to listen on (host:port)")
	fs.BoolVar(&c.readOnly, "read-only", false, "show, never change: no replay nor purge")
	fs.BoolVar(&c.hidePayloads, "hide-payloads", false, "show a payload only when the operator asks for it on the entry page")
	fs.BoolVar(&c.unauthenticated, "unauthenticated", false, "serve without authentication (loopback --addr only; requests must name a loopback host)")
	fs.StringVar(&c.basicUser, "basic-auth-user", "", "require HTTP basic authentication with this user (the operator of actions)")
	fs.StringVar(&c.basicPassEnv, "basic-auth-password-env", "", "the environment `VARIABLE` holding the basic-auth password")
	fs.StringVar(&c.tokenEnv, "token-env", "", "require a bearer token: the environment `VARIABLE` holding it")
	fs.StringVar(&c.operator, "operator", "", "who acts, in resolution records, without basic auth (default $USER@hostname)")
	fs.IntVar(&c.maxReplays, "max-replays", dlqops.DefaultMaxReplays, "replay cap: an event replayed this often goes to the parking topic (DLQ topic + \".parked\") instead")
	fs.DurationVar(&c.refresh, "refresh", 10*time.Second, "how often the index reads what is new in the DLQs")
}

func (c *consoleCommand) Validate() error {
	var missing []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"--broker", c.broker != ""}, {"--store", c.store != ""}, {"--topic or --topic-suffix", len(c.topics) > 0 || c.topicSuffix != ""}} {
		if !f.set {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s required", strings.Join(missing, ", "))
	}
	if c.maxReplays < 1 {
		return fmt.Errorf("--max-replays must be >= 1, got %d", c.maxReplays)
	}
	if c.refresh <= 0 {
		return fmt.Errorf("--refresh must be positive, got %v", c.refresh)
	}
	if len(c.operator) > resolution.MaxLen {
		return fmt.Errorf("--operator is %d bytes, more than %d", len(c.operator), resolution.MaxLen)
	}
	if _, _, err := net.SplitHostPort(c.addr); err != nil {
		return fmt.Errorf("--addr %q is not host:port", c.addr)
	}
	chosen := 0
	for _, b := range []bool{c.unauthenticated, c.basicUser != "" || c.basicPassEnv != "", c.tokenEnv != ""} {
		if b {
			chosen++
		}
	}
	switch {
	case chosen == 0:
		return errors.New("authentication required: --basic-auth-user with --basic-auth-password-env, --token-env, or --unauthenticated (loopback --addr only)")
	case chosen > 1:
		return errors.New("choose one of --basic-auth-user, --token-env and --unauthenticated")
	case c.unauthenticated && !console.IsLoopback(c.addr):
		return fmt.Errorf("--unauthenticated is allowed only on a loopback --addr (127.0.0.1:PORT, [::1]:PORT, localhost:PORT), not %q", c.addr)
	case c.unauthenticated:
		c.auth = console.Auth{Unauthenticated: true}
	case c.tokenEnv != "":
		tok := os.Getenv(c.tokenEnv)
		if tok == "" {
			return fmt.Errorf("--token-env %s: the environment variable is empty or unset", c.tokenEnv)
		}
		c.auth = console.Auth{BearerToken: tok}
	default:
		if c.basicUser == "" || c.basicPassEnv == "" {
			return errors.New("basic authentication needs both --basic-auth-user and --basic-auth-password-env")
		}
		pw := os.Getenv(c.basicPassEnv)
		if pw == "" {
			return fmt.Errorf("--basic-auth-password-env %s: the environment variable is empty or unset", c.basicPassEnv)
		}
		c.auth = console.Auth{BasicUser: c.basicUser, BasicPassword: pw}
	}
	return nil
}

// Run opens the broker, the store and the index, listens, and serves the
// console until ctx ends.
func (c *consoleCommand) Run(ctx context.Context, e *env) (result, error) {
	bspec, err := backend.ParseBroker(c.broker)
	if err != nil {
		return nil, err
	}
	sspec, err := backend.ParseStore(c.store)
	if err != nil {
		return nil, err
	}
	switch {
	case bspec.Kind == backend.GoChannel:
		return nil, fmt.Errorf("--broker %q: dead letters live on a real broker; give kafka://host:port, amqp://user:pass@host:5672/ or nats://host:4222", c.broker)
	case bspec.Embedded:
		return nil, fmt.Errorf("--broker %q would start an empty in-process Kafka cluster, which holds no dead letters; give your cluster as kafka://host:port", c.broker)
	case sspec.Kind == backend.Memory:
		return nil, fmt.Errorf("--store %q: resolution records in memory vanish when the command ends; give postgres://, mysql://, sqlite://PATH or redis://", c.store)
	}
	broker, err := backend.OpenBroker(ctx, bspec, nil, backend.ForDLQ(!c.readOnly))
	if err != nil {
		return nil, fmt.Errorf("open broker %s: %w", bspec, err)
	}
	defer func() { _ = broker.Close() }()
	st, err := backend.OpenResolutions(ctx, sspec)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", sspec, err)
	}
	defer func() { _ = st.Close() }()
	if c.topicSuffix != "" {
		lister, ok := broker.Source.(interface {
			Topics(ctx context.Context, suffix string) ([]string, error)
		})
		if !ok {
			return nil, errors.New("--topic-suffix: RabbitMQ cannot list its queues without the management plugin; name each DLQ with --topic")
		}
		found, err := lister.Topics(ctx, c.topicSuffix)
		if err != nil {
			return nil, err
		}
		for _, t := range found {
			if !slices.Contains(c.topics, t) {
				c.topics = append(c.topics, t)
			}
		}
		if len(c.topics) == 0 {
			return nil, fmt.Errorf("--topic-suffix %q: no topic of %s ends with it", c.topicSuffix, bspec)
		}
	}
	var idx console.Index
	switch {
	case st.DB != nil:
		idx, err = console.NewSQLIndex(ctx, st.DB, &console.SQLIndexOptions{Dialect: st.Dialect})
	case st.Redis != nil:
		idx, err = console.NewRedisIndex(st.Redis, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("open the index in %s: %w", sspec, err)
	}
	cfg := console.Config{
		DLQs: c.topics, Source: broker.Source, Resolutions: st.Store, Index: idx,
		MaxReplays: c.maxReplays, ReadOnly: c.readOnly, HidePayloads: c.hidePayloads,
		Auth: c.auth, Addr: c.addr, Operator: c.operator, RefreshInterval: c.refresh,
		Logger: slog.New(slog.NewTextHandler(e.stderr, nil)),
	}
	if !c.readOnly {
		cfg.Publisher = broker.Replay
	}
	h, err := console.New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", c.addr, err)
	}
	url := "http://" + ln.Addr().String() + "/"
	fmt.Fprintf(e.stderr, "idempo console: serving %s on %s (broker %s, store %s)\n", strings.Join(c.topics, ", "), url, bspec, sspec)
	if c.listening != nil {
		c.listening(url)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	indexed := make(chan struct{})
	go func() {
		defer close(indexed)
		_ = h.Run(runCtx)
	}()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err = <-served:
	}
	shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shut)
	stop()
	<-indexed
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return nil, fmt.Errorf("serve on %s: %w", c.addr, err)
	}
	return nil, nil
}
