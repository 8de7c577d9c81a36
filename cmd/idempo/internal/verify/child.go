package verify

import (
	"os"
	"os/exec"
)

// Child processes of verify get the broker and store URLs in their
// environment, never on their command line, where any user of the machine
// can read the credentials in them (ps, /proc/PID/cmdline). The
// verify-consumer and verify-outbox-child commands read them when --broker
// or --store is not given.
const (
	// EnvChildBroker holds a child's broker URL.
	EnvChildBroker = "IDEMPO_CHILD_BROKER"
	// EnvChildStore holds a child's store URL.
	EnvChildStore = "IDEMPO_CHILD_STORE"
)

// childCommand returns the command that starts a child process: command
// (the idempo binary and its leading arguments), then sub and args, with
// broker and store in the environment.
func childCommand(command []string, sub string, args []string, broker, store string) *exec.Cmd {
	argv := append(append(append([]string{}, command[1:]...), sub), args...)
	cmd := exec.Command(command[0], argv...)
	cmd.Env = append(os.Environ(), EnvChildBroker+"="+broker, EnvChildStore+"="+store)
	return cmd
}

// ChildURLs returns the broker and store URLs of a child process: the
// flags' values when given, else the environment's.
func ChildURLs(broker, store string) (string, string) {
	if broker == "" {
		broker = os.Getenv(EnvChildBroker)
	}
	if store == "" {
		store = os.Getenv(EnvChildStore)
	}
	return broker, store
}
