package verify

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// The URLs of a child process, credentials and all, are in its
// environment, not on its command line (which every user can read).
func TestChildCommandKeepsCredentialsOffTheCommandLine(t *testing.T) {
	const broker, store = "amqp://guest:s3cret-b@127.0.0.1:5672/", "postgres://u:s3cret-s@127.0.0.1/test"
	cases := map[string][]string{
		"verify-consumer": consumerArgs(ConsumerOptions{Broker: broker, Store: store, RunID: "r", Lease: time.Second}),
		"verify-outbox-child": outboxChildArgs(OutboxChildOptions{
			Role: RoleRelay, Broker: broker, Store: store, RunID: "r", Lease: time.Second,
		}),
	}
	for sub, args := range cases {
		cmd := childCommand([]string{"/bin/idempo", "--x"}, sub, args, broker, store)
		line := strings.Join(cmd.Args, " ")
		if strings.Contains(line, "s3cret") {
			t.Errorf("%s: a password is on the command line: %s", sub, line)
		}
		if !strings.HasPrefix(line, "/bin/idempo --x "+sub+" ") {
			t.Errorf("%s: command line %q", sub, line)
		}
		if !slices.Contains(cmd.Env, EnvChildBroker+"="+broker) || !slices.Contains(cmd.Env, EnvChildStore+"="+store) {
			t.Errorf("%s: the URLs are not in the child's environment", sub)
		}
	}
	t.Setenv(EnvChildBroker, broker)
	t.Setenv(EnvChildStore, store)
	if b, s := ChildURLs("", ""); b != broker || s != store {
		t.Errorf("ChildURLs from the environment = %q, %q", b, s)
	}
	if b, s := ChildURLs("kafka", "memory"); b != "kafka" || s != "memory" {
		t.Errorf("flags must win over the environment: %q, %q", b, s)
	}
}
