package embedded

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// reapInterval is how often the reaper looks at the embedded cluster's
// groups.
const reapInterval = time.Second

// reaper drops members of the embedded cluster's consumer groups that stopped
// talking without leaving, as Kafka does when a member's session times out.
//
// The embedded cluster misses one case: a member whose connection closes
// while its JoinGroup waits for a rebalance (a consumer killed during a
// rebalance) is kept, at random, with no session timer. The group's leader
// then assigns it partitions that nobody consumes, until some other rebalance
// happens to drop it. The reaper watches every group request (the cluster's
// control hooks see them all) and, once a group is stable, sends a LeaveGroup
// for any member that has sent nothing for longer than its group's session
// timeout: the rebalance that follows gives its partitions to the live
// members.
type reaper struct {
	client *kgo.Client
	stop   chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	seen    map[memberKey]time.Time  // last request naming the member, or first sighting
	session map[string]time.Duration // group → longest session timeout asked for
	groups  map[string]struct{}      // groups to look at
}

type memberKey struct{ group, member string }

func startReaper(c *kfake.Cluster, addrs []string) (*reaper, error) {
	client, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		return nil, err
	}
	r := &reaper{
		client:  client,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		seen:    map[memberKey]time.Time{},
		session: map[string]time.Duration{},
		groups:  map[string]struct{}{},
	}
	for _, key := range []kmsg.Key{kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.OffsetCommit, kmsg.LeaveGroup} {
		c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			r.observe(req)
			return nil, nil, false // the cluster handles the request as usual
		})
	}
	go r.loop()
	return r, nil
}

// observe records that a member spoke. It runs on the cluster's loop.
func (r *reaper) observe(req kmsg.Request) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	switch req := req.(type) {
	case *kmsg.JoinGroupRequest:
		r.groups[req.Group] = struct{}{}
		if d := time.Duration(req.SessionTimeoutMillis) * time.Millisecond; d > r.session[req.Group] {
			r.session[req.Group] = d
		}
		if req.MemberID != "" {
			r.seen[memberKey{req.Group, req.MemberID}] = now
		}
	case *kmsg.SyncGroupRequest:
		r.seen[memberKey{req.Group, req.MemberID}] = now
	case *kmsg.HeartbeatRequest:
		r.seen[memberKey{req.Group, req.MemberID}] = now
	case *kmsg.OffsetCommitRequest:
		if req.MemberID != "" {
			r.seen[memberKey{req.Group, req.MemberID}] = now
		}
	case *kmsg.LeaveGroupRequest:
		delete(r.seen, memberKey{req.Group, req.MemberID})
		for _, m := range req.Members {
			delete(r.seen, memberKey{req.Group, m.MemberID})
		}
	}
}

func (r *reaper) loop() {
	defer close(r.done)
	tick := time.NewTicker(reapInterval)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
			r.reap()
		}
	}
}

// reap looks at every known group once and drops its silent members.
func (r *reaper) reap() {
	ctx, cancel := context.WithTimeout(context.Background(), reapInterval)
	defer cancel()
	r.mu.Lock()
	groups := make([]string, 0, len(r.groups))
	for g := range r.groups {
		groups = append(groups, g)
	}
	r.mu.Unlock()
	if len(groups) == 0 {
		return
	}
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Groups = groups
	shards := r.client.RequestSharded(ctx, req)
	now := time.Now()
	for _, shard := range shards {
		resp, ok := shard.Resp.(*kmsg.DescribeGroupsResponse)
		if shard.Err != nil || !ok {
			continue
		}
		for _, g := range resp.Groups {
			for _, member := range r.silent(g, now) {
				leave := kmsg.NewPtrLeaveGroupRequest()
				leave.Group = g.Group
				m := kmsg.NewLeaveGroupRequestMember()
				m.MemberID = member
				leave.Members = []kmsg.LeaveGroupRequestMember{m}
				leave.MemberID = member // versions before 3
				_, _ = leave.RequestWith(ctx, r.client)
			}
		}
	}
}

// silent returns the members of a stable group that have sent nothing for
// longer than the group's session timeout. A member is timed from its last
// request, or, if none was seen, from the first look that found the group
// stable with it.
func (r *reaper) silent(g kmsg.DescribeGroupsResponseGroup, now time.Time) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g.ErrorCode != 0 || g.State != "Stable" {
		return nil
	}
	session := r.session[g.Group]
	if session <= 0 {
		return nil
	}
	current := make(map[string]bool, len(g.Members))
	var silent []string
	for _, m := range g.Members {
		current[m.MemberID] = true
		key := memberKey{g.Group, m.MemberID}
		last, ok := r.seen[key]
		if !ok {
			r.seen[key] = now // first sighting
			continue
		}
		if now.Sub(last) > session+reapInterval {
			silent = append(silent, m.MemberID)
			delete(r.seen, key)
		}
	}
	// Forget members that are gone.
	for key := range r.seen {
		if key.group == g.Group && !current[key.member] {
			delete(r.seen, key)
		}
	}
	return silent
}

func (r *reaper) close() {
	close(r.stop)
	<-r.done
	r.client.Close()
}
