package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/idempo/idempo/dedup"
	"github.com/idempo/idempo/dedup/sqlstore"
)

// The kill test re-executes the test binary as a consumer process (the
// helper mode below) and kills it with SIGKILL at random moments.
const (
	helperEnv        = "IDEMPO_SQLSTORE_TEST_HELPER"
	helperDialectEnv = "IDEMPO_SQLSTORE_TEST_DIALECT"
	helperDSNEnv     = "IDEMPO_SQLSTORE_TEST_DSN"
	helperTableEnv   = "IDEMPO_SQLSTORE_TEST_TABLE"
	helperEffectsEnv = "IDEMPO_SQLSTORE_TEST_EFFECTS"
	helperScopeEnv   = "IDEMPO_SQLSTORE_TEST_SCOPE"
	helperEventsEnv  = "IDEMPO_SQLSTORE_TEST_EVENTS"

	killLease   = 300 * time.Millisecond
	killWorkers = 12
)

// runHelperIfAsked runs the consumer helper and exits the process when the
// environment asks for it.
func runHelperIfAsked() bool {
	if os.Getenv(helperEnv) != "kill-consumer" {
		return false
	}
	if err := killConsumer(); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(3)
	}
	os.Exit(0)
	return true
}

// killConsumer consumes every event of the work list with killWorkers
// goroutines: Claim, then CompleteInTx with a business insert, until every
// claim reports done. The store shares round trips (the default), so the
// claims of the goroutines go out in batches.
func killConsumer() error {
	d := sqlstore.Dialect(os.Getenv(helperDialectEnv))
	events, err := strconv.Atoi(os.Getenv(helperEventsEnv))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := openDSN(ctx, d, os.Getenv(helperDSNEnv), 8)
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := sqlstore.New(db, &sqlstore.Options{Dialect: d, Table: os.Getenv(helperTableEnv)})
	if err != nil {
		return err
	}
	insert := insertEffect(d, os.Getenv(helperEffectsEnv))
	scope := os.Getenv(helperScopeEnv)
	pid := os.Getpid()

	var wg sync.WaitGroup
	errs := make(chan error, killWorkers)
	for range killWorkers {
		wg.Go(func() {
			pending := rand.Perm(events)
			for len(pending) > 0 {
				var next []int
				for _, i := range pending {
					id := fmt.Sprintf("event-%d", i)
					key := dedup.Key{Scope: scope, ID: id}
					req := dedup.ClaimRequest{Token: dedup.NewToken(), Lease: killLease, Retention: time.Hour}
					res, err := st.Claim(ctx, key, req)
					if err != nil {
						errs <- err
						return
					}
					switch res.Status {
					case dedup.StatusDone:
						continue
					case dedup.StatusInProgress:
						next = append(next, i)
						continue
					}
					err = st.CompleteInTx(ctx, key, req.Token, time.Hour, func(ctx context.Context) error {
						tx, _ := sqlstore.TxFromContext(ctx)
						if _, err := tx.ExecContext(ctx, insert, id, pid); err != nil {
							return err
						}
						time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
						return nil
					})
					if err != nil && !errors.Is(err, dedup.ErrLeaseLost) {
						errs <- err
						return
					}
					next = append(next, i) // confirm it is done on the next pass
				}
				pending = next
				if len(pending) > 0 {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TestKillConsumer kills a consumer process at random moments, restarts it,
// and checks that every event's business write is committed exactly once.
func TestKillConsumer(t *testing.T) {
	t.Parallel()
	for _, d := range dialects {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			st, dsn := newStore(t, d)
			db := st.DB()
			effects := createEffects(t, db, d)
			const events, kills = 600, 7
			env := append(os.Environ(),
				helperEnv+"=kill-consumer",
				helperDialectEnv+"="+string(d),
				helperDSNEnv+"="+dsn,
				helperTableEnv+"="+st.Table(),
				helperEffectsEnv+"="+effects,
				helperScopeEnv+"="+randomName("kill-"),
				helperEventsEnv+"="+strconv.Itoa(events),
			)
			run := func() *exec.Cmd {
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				cmd.Env = env
				cmd.Stderr = os.Stderr
				require.NoError(t, cmd.Start())
				return cmd
			}
			killed := 0
			for range kills {
				cmd := run()
				time.Sleep(time.Duration(200+rand.IntN(500)) * time.Millisecond)
				_ = cmd.Process.Kill()
				err := cmd.Wait()
				var exit *exec.ExitError
				if errors.As(err, &exit) && !exit.Exited() {
					killed++
				} else {
					require.NoError(t, err, "the consumer failed before it was killed")
				}
			}
			cmd := run()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				require.NoError(t, err, "the last consumer must finish the work")
			case <-time.After(90 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatal("the last consumer did not finish in 90s")
			}
			counts := effectCounts(t, db, d, effects)
			t.Logf("%s: %d of %d runs killed mid-work; %d events", d, killed, kills, len(counts))
			require.Len(t, counts, events, "every event has its effect")
			for id, n := range counts {
				require.Equal(t, 1, n, "effect of %s committed %d times", id, n)
			}
		})
	}
}
