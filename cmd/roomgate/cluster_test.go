package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/internal/testkit"
	"github.com/roomgate/roomgate/storage"
	"github.com/roomgate/roomgate/storage/redisstore"
	"github.com/roomgate/roomgate/storage/redisstore/redistest"
)

// node is one roomgate process of a test cluster.
type node struct {
	id, addr string
	cmd      *exec.Cmd
}

// startCluster runs n nodes on redisURL, each on its own port, as real
// processes: kill -9 and SIGSTOP are real.
func startCluster(t *testing.T, redisURL string, n int, extra ...string) []*node {
	t.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		addr := testkit.FreeAddr(t)
		nd := &node{id: fmt.Sprintf("n%d", i+1), addr: addr}
		args := append([]string{"-addr", addr, "-advertise", addr, "-node-id", nd.id, "-redis", redisURL,
			"-lease-ttl", "2s", "-log-level", "warn"}, extra...)
		nd.cmd = start(t, addr, nil, args...)
		nodes[i] = nd
	}
	return nodes
}

// chatConn is a chat client that reads frames by hand, so it sees every
// close code (gobwas's helpers refuse 1012).
type chatConn struct {
	c      net.Conn
	msgs   chan chatMsg
	closed chan int // the close code, once
}

func dialChat(t *testing.T, addr, room, user string) *chatConn {
	t.Helper()
	return dialJSON(t, addr, "/ws/chat/"+room+"?user="+user+"&name="+user)
}

// dialJSON opens a socket to a class that speaks JSON and reads it in the
// background.
func dialJSON(t *testing.T, addr, path string) *chatConn {
	t.Helper()
	cc := &chatConn{c: testkit.Dial(t, "ws://"+addr+path), msgs: make(chan chatMsg, 100000), closed: make(chan int, 1)}
	go cc.read()
	return cc
}

func (cc *chatConn) read() {
	for {
		f, err := ws.ReadFrame(cc.c)
		if err != nil {
			cc.closed <- 1006
			return
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(f.Payload)
			cc.closed <- int(code)
			return
		case ws.OpText:
			var m chatMsg
			if json.Unmarshal(f.Payload, &m) == nil {
				cc.msgs <- m
			}
		}
	}
}

func (cc *chatConn) say(text string) error {
	return wsutil.WriteClientText(cc.c, []byte(`{"type":"say","text":"`+text+`"}`))
}

// next returns the next chat message of type typ, skipping the others.
func (cc *chatConn) next(t *testing.T, typ string, within time.Duration) (chatMsg, bool) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-cc.msgs:
			if m.Type == typ {
				return m, true
			}
		case code := <-cc.closed:
			cc.closed <- code
			return chatMsg{}, false
		case <-deadline:
			return chatMsg{}, false
		}
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func TestClusterChatAcrossNodes(t *testing.T) {
	redis := redistest.Start(t)
	chatAcrossNodes(t, redis.URL())
}

// TestClusterOnRedisCluster runs the cluster on a Redis Cluster of three
// masters: each room's keys share a hash tag, so its scripts run on one shard.
func TestClusterOnRedisCluster(t *testing.T) {
	addrs := redistest.StartCluster(t, 3)
	chatAcrossNodes(t, strings.Join(addrs, ","))
}

// chatAcrossNodes has sockets on all three nodes talk in one room: every
// message reaches every socket, seq without gaps or duplicates.
func chatAcrossNodes(t *testing.T, redisURL string) {
	nodes := startCluster(t, redisURL, 3)

	var listed struct {
		Nodes []struct{ ID, Address string }
	}
	getJSON(t, "http://"+nodes[0].addr+"/v1/nodes", &listed)
	if len(listed.Nodes) != 3 {
		t.Fatalf("/v1/nodes lists %d nodes, want 3: %+v", len(listed.Nodes), listed)
	}

	const perNode, perSocket = 2, 40
	var conns []*chatConn
	for _, nd := range nodes {
		for j := range perNode {
			c := dialChat(t, nd.addr, "across", fmt.Sprintf("%s-%d", nd.id, j))
			if _, ok := c.next(t, "welcome", 5*time.Second); !ok {
				t.Fatalf("no welcome on %s", nd.id)
			}
			conns = append(conns, c)
		}
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			for k := range perSocket {
				if err := c.say(fmt.Sprintf("s%d-%d", i, k)); err != nil {
					t.Errorf("send: %v", err)
					return
				}
				time.Sleep(2 * time.Millisecond) // pacing, not synchronizing: a chat's pace, not a flood
			}
		})
	}
	wg.Wait()
	total := len(conns) * perSocket
	for i, c := range conns {
		last := 0
		for n := range total {
			m, ok := c.next(t, "message", 10*time.Second)
			if !ok {
				t.Fatalf("socket %d got %d of %d messages", i, n, total)
			}
			if last != 0 && m.Seq != last+1 {
				t.Fatalf("socket %d: seq %d after %d: a gap or a duplicate", i, m.Seq, last)
			}
			last = m.Seq
		}
	}

	// Every node tells the same owner.
	owners := map[string]bool{}
	for _, nd := range nodes {
		var info struct{ Owner, State string }
		getJSON(t, "http://"+nd.addr+"/v1/rooms/chat/across", &info)
		owners[info.Owner] = true
		if info.State != "active" {
			t.Errorf("%s says the room is %q, want active", nd.id, info.State)
		}
	}
	if len(owners) != 1 || owners[""] {
		t.Fatalf("nodes disagree on the owner: %v", owners)
	}
}

// chatter keeps a chat socket open on one node while it runs, opening a
// new one when the node closes it, and sends a message every so often.
// Each message's text carries its send time, so the test can tell when
// the room served again after a failure.
type chatter struct {
	addr, room, user string

	mu         sync.Mutex
	received   map[int]string // seq → text, over all its sockets
	recvAt     []time.Time    // when each message sent by anyone after t0 arrived
	sentAfter  []int64        // and when it had been sent
	violations []string       // a duplicate or out-of-order seq on one socket
	closes     map[string]int // close codes and reasons seen
	sockets    int
}

func newChatter(addr, room, user string) *chatter {
	return &chatter{addr: addr, room: room, user: user, received: map[int]string{}, closes: map[string]int{}}
}

func (ch *chatter) run(ctx context.Context, every time.Duration) {
	// Each round but the first waits a client's reconnect backoff.
	for n, first := 0, true; ctx.Err() == nil; first = false {
		if !first {
			time.Sleep(50 * time.Millisecond) // pacing, not synchronizing: a client's reconnect backoff
		}
		conn, err := testkit.DialContext(ctx, "ws://"+ch.addr+"/ws/chat/"+ch.room+"?user="+ch.user+"&name="+ch.user)
		if err != nil {
			continue
		}
		ch.mu.Lock()
		ch.sockets++
		ch.mu.Unlock()
		done := make(chan struct{})
		go func() {
			defer close(done)
			ch.read(conn)
		}()
		t := time.NewTicker(every)
	send:
		for {
			select {
			case <-ctx.Done():
				break send
			case <-done:
				break send
			case <-t.C:
				n++
				text := fmt.Sprintf("%s-%d-%d", ch.user, n, time.Now().UnixNano())
				if wsutil.WriteClientText(conn, []byte(`{"type":"say","text":"`+text+`"}`)) != nil {
					break send
				}
			}
		}
		t.Stop()
		conn.Close()
		<-done
	}
}

func (ch *chatter) read(c net.Conn) {
	last := 0
	for {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		f, err := ws.ReadFrame(c)
		if err != nil {
			return
		}
		if f.Header.Masked {
			ws.Cipher(f.Payload, f.Header.Mask, 0)
		}
		if f.Header.OpCode == ws.OpClose {
			code, reason := ws.ParseCloseFrameData(f.Payload)
			ch.mu.Lock()
			ch.closes[fmt.Sprint(code, " ", reason)]++
			ch.mu.Unlock()
			return
		}
		var m chatMsg
		if f.Header.OpCode != ws.OpText || json.Unmarshal(f.Payload, &m) != nil || m.Type != "message" {
			continue
		}
		now := time.Now()
		ch.mu.Lock()
		if m.Seq <= last {
			ch.violations = append(ch.violations, fmt.Sprintf("%s: seq %d after %d", ch.user, m.Seq, last))
		}
		last = m.Seq
		if old, dup := ch.received[m.Seq]; dup && old != m.Text {
			ch.violations = append(ch.violations, fmt.Sprintf("%s: seq %d is %q and %q", ch.user, m.Seq, old, m.Text))
		}
		ch.received[m.Seq] = m.Text
		var sent int64
		if i := strings.LastIndexByte(m.Text, '-'); i >= 0 {
			sent, _ = strconv.ParseInt(m.Text[i+1:], 10, 64)
		}
		ch.recvAt = append(ch.recvAt, now)
		ch.sentAfter = append(ch.sentAfter, sent)
		ch.mu.Unlock()
	}
}

// heardSince counts the messages it received that were sent after t.
func (ch *chatter) heardSince(t time.Time) int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	n := 0
	for _, sent := range ch.sentAfter {
		if sent > t.UnixNano() {
			n++
		}
	}
	return n
}

// talking waits until every chatter has received n messages sent after
// since: the room serves them all.
func talking(t *testing.T, chs []*chatter, since time.Time, n int, within time.Duration) {
	t.Helper()
	testkit.Eventually(t, within, func() error {
		for _, ch := range chs {
			if got := ch.heardSince(since); got < n {
				return fmt.Errorf("%s received %d messages sent since %s, want %d", ch.user, got, since.Format("15:04:05.000"), n)
			}
		}
		return nil
	})
}

// servedAgain is how long after t the first message sent after t arrived.
func servedAgain(chs []*chatter, t time.Time) (time.Duration, bool) {
	best, ok := time.Duration(0), false
	for _, ch := range chs {
		ch.mu.Lock()
		for i, at := range ch.recvAt {
			if ch.sentAfter[i] > t.UnixNano() {
				if d := at.Sub(t); !ok || d < best {
					best, ok = d, true
				}
			}
		}
		ch.mu.Unlock()
	}
	return best, ok
}

// history reads the chat room's stored messages straight from Redis.
func history(t *testing.T, redisURL, room string) map[int]string {
	t.Helper()
	s, err := redisstore.Open(context.Background(), redisstore.Options{URL: redisURL})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kvs, err := s.List(context.Background(), storage.Room{Class: "chat", Name: room}, storage.ListOptions{Prefix: "msg/"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, kv := range kvs {
		var m chatMsg
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			t.Fatalf("stored message %q: %v", kv.Key, err)
		}
		out[m.Seq] = m.Text
	}
	return out
}

// checkHistory fails the test unless every message any chatter received is
// in the stored history, and the history has no gap.
func checkHistory(t *testing.T, hist map[int]string, chs []*chatter) {
	t.Helper()
	texts := map[string]int{}
	for seq := 1; seq <= len(hist); seq++ {
		text, ok := hist[seq]
		if !ok {
			t.Errorf("history has a gap at seq %d", seq)
		}
		if first, dup := texts[text]; dup {
			t.Errorf("message %q is in the history twice, at %d and %d", text, first, seq)
		}
		texts[text] = seq
	}
	for _, ch := range chs {
		ch.mu.Lock()
		for seq, text := range ch.received {
			if hist[seq] != text {
				t.Errorf("%s received seq %d %q; the history has %q", ch.user, seq, text, hist[seq])
			}
		}
		for _, v := range ch.violations {
			t.Error(v)
		}
		ch.mu.Unlock()
	}
}

// ownerOf asks a node which node runs a room.
func ownerOf(t *testing.T, addr, class, room string) string {
	var info struct{ Owner string }
	getJSON(t, "http://"+addr+"/v1/rooms/"+class+"/"+room, &info)
	return info.Owner
}

// TestClusterOwnerKilled kills the room's owner with SIGKILL during
// traffic from the other nodes: the room serves again within the lease
// TTL and a second, and no message that anyone received is lost.
func TestClusterOwnerKilled(t *testing.T) {
	redis := redistest.Start(t)
	nodes := startCluster(t, redis.URL(), 3)
	// The first socket places the room on n1.
	first := dialChat(t, nodes[0].addr, "failover", "placer")
	if _, ok := first.next(t, "welcome", 5*time.Second); !ok {
		t.Fatal("no welcome")
	}
	if o := ownerOf(t, nodes[1].addr, "chat", "failover"); o != "n1" {
		t.Fatalf("owner %q, want n1", o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var chs []*chatter
	var wg sync.WaitGroup
	started := time.Now()
	for _, nd := range nodes[1:] {
		for j := range 2 {
			ch := newChatter(nd.addr, "failover", fmt.Sprintf("%s-%d", nd.id, j))
			chs = append(chs, ch)
			wg.Go(func() { ch.run(ctx, 20*time.Millisecond) })
		}
	}
	talking(t, chs, started, 20, 10*time.Second)
	// Kill at a random point of the lease's renewal cycle (every third of
	// the TTL), so repeated runs measure the spread, not one phase.
	time.Sleep(rand.N(700 * time.Millisecond)) // time passes on purpose: a random phase
	killed := time.Now()
	nodes[0].cmd.Process.Kill()
	nodes[0].cmd.Wait()
	talking(t, chs, killed, 100, 15*time.Second) // served again, to everyone
	cancel()
	wg.Wait()

	for _, ch := range chs {
		t.Logf("%s: %d sockets, closes %v, %d received", ch.user, ch.sockets, ch.closes, len(ch.received))
	}
	took, ok := servedAgain(chs, killed)
	if !ok {
		t.Fatal("the room never served again after its owner was killed")
	}
	t.Logf("served again %v after kill -9 of the owner (lease TTL 2s)", took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("served again after %v, want within the lease TTL + 1s", took)
	}
	if o := ownerOf(t, nodes[1].addr, "chat", "failover"); o != "n2" && o != "n3" {
		t.Errorf("owner after the failover %q, want n2 or n3", o)
	}
	checkHistory(t, history(t, redis.URL(), "failover"), chs)
}

// TestClusterFrozenOwnerCannotCommit stops the owner with SIGSTOP past its
// lease while the others keep sending, then lets it run again: it must not
// commit, and no socket may see a duplicate or out-of-order seq.
func TestClusterFrozenOwnerCannotCommit(t *testing.T) {
	redis := redistest.Start(t)
	nodes := startCluster(t, redis.URL(), 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var chs []*chatter
	var wg sync.WaitGroup
	// n1's own chatter places the room there and keeps talking to it.
	started := time.Now()
	for _, nd := range nodes {
		ch := newChatter(nd.addr, "frozen", nd.id)
		chs = append(chs, ch)
		wg.Go(func() { ch.run(ctx, 20*time.Millisecond) })
		if nd == nodes[0] {
			talking(t, chs, started, 1, 10*time.Second) // the room runs, on n1
		}
	}
	talking(t, chs, started, 20, 10*time.Second)
	if o := ownerOf(t, nodes[1].addr, "chat", "frozen"); o != "n1" {
		t.Fatalf("owner %q, want n1", o)
	}
	nodes[0].cmd.Process.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	// Frozen until the others are served again: another node has taken
	// the room, so the frozen one's lease is gone.
	talking(t, chs[1:], stopped, 20, 15*time.Second)
	nodes[0].cmd.Process.Signal(syscall.SIGCONT)
	resumed := time.Now()
	testkit.Eventually(t, 15*time.Second, func() error {
		if lost := metricValue(t, nodes[0].addr, `roomgate_leases_lost_total`); lost < 1 {
			return fmt.Errorf("the resumed node reports %v lost leases, want 1", lost)
		}
		return nil
	})
	talking(t, chs, resumed, 20, 15*time.Second) // n1's chatter too, through the new owner
	cancel()
	wg.Wait()

	took, ok := servedAgain(chs[1:], stopped)
	if !ok {
		t.Fatal("the room never served again while its owner was frozen")
	}
	t.Logf("served again %v after SIGSTOP of the owner", took.Round(time.Millisecond))
	if o := ownerOf(t, nodes[1].addr, "chat", "frozen"); o == "n1" || o == "" {
		t.Errorf("owner after the freeze %q, want another node", o)
	}
	// The resumed node found its lease gone before it ran anything: it
	// stopped the room (and any commit it still tried was refused).
	if lost := metricValue(t, nodes[0].addr, `roomgate_leases_lost_total`); lost < 1 {
		t.Errorf("the resumed node reports %v lost leases, want 1", lost)
	}
	t.Logf("refused commits of the resumed node: %v", metricValue(t, nodes[0].addr, `roomgate_fenced_commits_total{where="store"}`))
	checkHistory(t, history(t, redis.URL(), "frozen"), chs)
}

// metricValue reads one sample from a node's /metrics.
func metricValue(t *testing.T, addr, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// TestClusterCounterFromAllNodes increments one counter from sockets on
// every node at once: the final value is the number of increments.
func TestClusterCounterFromAllNodes(t *testing.T) {
	redis := redistest.Start(t)
	nodes := startCluster(t, redis.URL(), 3)
	const perNode, incs = 3, 150
	var conns []*chatConn
	for _, nd := range nodes {
		for range perNode {
			cc := dialJSON(t, nd.addr, "/ws/counter/shared")
			if _, ok := cc.next(t, "count", 5*time.Second); !ok {
				t.Fatalf("no count on connect at %s", nd.id)
			}
			conns = append(conns, cc)
		}
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			for range incs {
				if wsutil.WriteClientText(c.c, []byte("inc")) != nil {
					t.Error("send failed")
					return
				}
				time.Sleep(time.Millisecond) // pacing, not synchronizing: increments, not a flood
			}
		})
	}
	wg.Wait()
	want := len(conns) * incs
	for i, c := range conns {
		for {
			m, ok := c.next(t, "count", 10*time.Second)
			if !ok {
				t.Fatalf("socket %d: the count never reached %d", i, want)
			}
			if m.Value > want {
				t.Fatalf("socket %d: count %d, more than the %d increments", i, m.Value, want)
			}
			if m.Value == want {
				break
			}
		}
	}
	// A newcomer on another node reads the stored value.
	if m, ok := dialJSON(t, nodes[1].addr, "/ws/counter/shared").next(t, "count", 5*time.Second); !ok || m.Value != want {
		t.Fatalf("stored count %d, want %d", m.Value, want)
	}
}

// TestClusterEdgeKilled kills a node that holds sockets of a room owned
// elsewhere: the owner drops them and the room says goodbye (OnClose, 1006),
// while sockets on the other nodes keep working.
func TestClusterEdgeKilled(t *testing.T) {
	redis := redistest.Start(t)
	nodes := startCluster(t, redis.URL(), 3)
	owner := dialChat(t, nodes[0].addr, "edge", "owner-side")
	owner.next(t, "welcome", 5*time.Second)
	watcher := dialChat(t, nodes[1].addr, "edge", "watcher")
	watcher.next(t, "welcome", 5*time.Second)
	for _, u := range []string{"doomed-a", "doomed-b"} {
		c := dialChat(t, nodes[2].addr, "edge", u)
		c.next(t, "welcome", 5*time.Second)
	}
	killed := time.Now()
	nodes[2].cmd.Process.Kill()
	nodes[2].cmd.Wait()
	left := map[string]bool{}
	for len(left) < 2 {
		m, ok := watcher.next(t, "leave", 10*time.Second)
		if !ok {
			t.Fatalf("after killing the edge, the room said goodbye to %v only", left)
		}
		left[m.User.ID] = true
	}
	t.Logf("the room dropped the dead edge's sockets %v after kill -9", time.Since(killed).Round(time.Millisecond))
	if !left["doomed-a"] || !left["doomed-b"] {
		t.Fatalf("left: %v", left)
	}
	if err := watcher.say("still here"); err != nil {
		t.Fatal(err)
	}
	if m, ok := owner.next(t, "message", 5*time.Second); !ok || m.Text != "still here" {
		t.Fatalf("after the edge died: %+v %v", m, ok)
	}
	var conns struct{ Connections []struct{ Edge string } }
	getJSON(t, "http://"+nodes[1].addr+"/v1/rooms/chat/edge/connections", &conns)
	if len(conns.Connections) != 2 {
		t.Fatalf("connections after the edge died: %+v, want the 2 on live nodes", conns)
	}
}

// TestClusterOwnerDrains sends SIGTERM to the owner during traffic: it
// closes its own sockets with 1012, commits, releases its leases and exits;
// another node takes the room at once, without waiting for the lease TTL,
// and nothing anyone received is lost.
func TestClusterOwnerDrains(t *testing.T) {
	redis := redistest.Start(t)
	// A long TTL: only a released lease lets another node in quickly.
	nodes := startCluster(t, redis.URL(), 3, "-lease-ttl", "10s")
	mine := dialChat(t, nodes[0].addr, "drain", "on-owner")
	mine.next(t, "welcome", 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var chs []*chatter
	var wg sync.WaitGroup
	started := time.Now()
	for _, nd := range nodes[1:] {
		ch := newChatter(nd.addr, "drain", nd.id)
		chs = append(chs, ch)
		wg.Go(func() { ch.run(ctx, 10*time.Millisecond) })
	}
	talking(t, chs, started, 20, 10*time.Second)
	termed := time.Now()
	nodes[0].cmd.Process.Signal(syscall.SIGTERM)
	select {
	case code := <-mine.closed:
		if code != 1012 {
			t.Errorf("the owner's own socket closed with %d, want 1012", code)
		}
	case <-time.After(5 * time.Second):
		t.Error("the draining owner did not close its socket")
	}
	wsutil.WriteClientMessage(mine.c, ws.OpClose, ws.NewCloseFrameBody(1012, ""))
	if err := nodes[0].cmd.Wait(); err != nil {
		t.Errorf("drained node exited with %v", err)
	}
	exitedAt := time.Now()
	talking(t, chs, exitedAt, 100, 15*time.Second) // served again, to everyone
	cancel()
	wg.Wait()
	// The draining owner serves until it exits; after that, another node
	// must take the room without waiting for the lease to expire.
	took, ok := servedAgain(chs, exitedAt)
	if !ok {
		t.Fatal("the room never served again after its owner drained")
	}
	t.Logf("owner exited %v after SIGTERM; the room served again %v after the exit", exitedAt.Sub(termed).Round(time.Millisecond), took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("served again after %v: the drained owner's leases (TTL 10 s) should have been released, not left to expire", took)
	}
	checkHistory(t, history(t, redis.URL(), "drain"), chs)
}

// TestClusterRedisRestart stops Redis under a running cluster: sockets get
// a clear close instead of silence, /readyz says 503, and once Redis is
// back the cluster serves again with its data.
func TestClusterRedisRestart(t *testing.T) {
	redis := redistest.Start(t)
	nodes := startCluster(t, redis.URL(), 2)
	a := dialChat(t, nodes[0].addr, "outage", "a")
	a.next(t, "welcome", 5*time.Second)
	b := dialChat(t, nodes[1].addr, "outage", "b")
	b.next(t, "welcome", 5*time.Second)
	a.say("before")
	if m, ok := b.next(t, "message", 5*time.Second); !ok || m.Text != "before" {
		t.Fatalf("before the outage: %+v %v", m, ok)
	}

	redis.Stop()
	resp, err := http.Get("http://" + nodes[0].addr + "/readyz")
	if err != nil {
		t.Fatalf("/readyz with Redis down: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with Redis down: %s, want 503", resp.Status)
	}
	// A message in the outage gets its socket closed with a code that
	// tells the client to come back (the room cannot commit, and soon
	// cannot hold its lease), not silence.
	b.say("during")
	select {
	case code := <-b.closed:
		if code != 1011 && code != 1012 {
			t.Errorf("socket closed with %d during the outage, want 1011 or 1012", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a message sent while Redis was down got no answer and no close")
	}
	// A new socket is refused clearly: 503 before the upgrade, or a close
	// frame with 1011 or 1012 after it; never a dropped connection or silence.
	c, _, _, err := ws.Dial(context.Background(), "ws://"+nodes[1].addr+"/ws/chat/outage?user=c")
	var status ws.StatusError
	switch {
	case errors.As(err, &status):
		if status != http.StatusServiceUnavailable {
			t.Errorf("new socket during the outage refused with %d, want 503", status)
		}
	case err != nil:
		t.Errorf("new socket during the outage: %v, want a clear refusal", err)
	default:
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		f, err := ws.ReadFrame(c)
		for err == nil && f.Header.OpCode != ws.OpClose {
			f, err = ws.ReadFrame(c)
		}
		if err != nil {
			t.Errorf("new socket during the outage: %v, want a close frame", err)
		} else if code, _ := ws.ParseCloseFrameData(f.Payload); code != 1012 && code != 1011 {
			t.Errorf("new socket during the outage closed with %d, want 1011 or 1012", code)
		}
		c.Close()
	}

	redis.Restart()
	testkit.WaitReady(t, "http://"+nodes[0].addr+"/readyz", 15*time.Second)
	a2 := dialChat(t, nodes[0].addr, "outage", "a2")
	if w, ok := a2.next(t, "welcome", 10*time.Second); !ok {
		t.Fatal("no welcome after Redis came back")
	} else if len(w.History) == 0 || w.History[0].Text != "before" {
		t.Errorf("history after the outage: %+v, want the message from before", w.History)
	}
	b2 := dialChat(t, nodes[1].addr, "outage", "b2")
	b2.next(t, "welcome", 10*time.Second)
	a2.say("after")
	if m, ok := b2.next(t, "message", 10*time.Second); !ok || m.Text != "after" {
		t.Fatalf("after the outage: %+v %v", m, ok)
	}
}

// TestClusterAdminAcrossNodes drives a room owned by one node through the
// REST API of the others.
func TestClusterAdminAcrossNodes(t *testing.T) {
	redis := redistest.Start(t)
	nodes := startCluster(t, redis.URL(), 3)
	u1 := dialChat(t, nodes[0].addr, "admin", "u1")
	u1.next(t, "welcome", 5*time.Second)
	u2 := dialChat(t, nodes[1].addr, "admin", "u2")
	u2.next(t, "welcome", 5*time.Second)
	third := "http://" + nodes[2].addr + "/v1/rooms/chat/admin"

	var conns struct {
		Connections []struct{ ID, Edge string }
	}
	getJSON(t, third+"/connections", &conns)
	edges := map[string]string{}
	for _, c := range conns.Connections {
		edges[c.Edge] = c.ID
	}
	if len(edges) != 2 || edges["n1"] == "" || edges["n2"] == "" {
		t.Fatalf("connections seen from n3: %+v, want one on n1 and one on n2", conns)
	}
	var list struct {
		Rooms []struct{ Room, Owner, State string }
	}
	getJSON(t, "http://"+nodes[1].addr+"/v1/rooms?class=chat", &list)
	if len(list.Rooms) != 1 || list.Rooms[0].Owner != "n1" || list.Rooms[0].State != "active" {
		t.Fatalf("rooms seen from n2: %+v, want admin owned by n1, active", list)
	}

	resp, err := http.Post(third+"/broadcast", "application/json", strings.NewReader(`{"type":"note","text":"from n3"}`))
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("broadcast from n3: %v %v", resp, err)
	}
	resp.Body.Close()
	for _, c := range []*chatConn{u1, u2} {
		if m, ok := c.next(t, "note", 5*time.Second); !ok || m.Text != "from n3" {
			t.Fatalf("broadcast not received: %+v %v", m, ok)
		}
	}

	deleteAndExpectClose(t, third+"/connections/"+edges["n2"], u2, 4403)

	resp, err = http.Post(third+"/request/anything", "application/octet-stream", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "no_request_handler") {
		t.Fatalf("request to chat (no OnRequest) through n3: %d %s", resp.StatusCode, body)
	}

	deleteAndExpectClose(t, "http://"+nodes[1].addr+"/v1/rooms/chat/admin", u1, 4404)
	if hist := history(t, redis.URL(), "admin"); len(hist) != 0 {
		t.Fatalf("deleted room still has %d messages", len(hist))
	}
}

// deleteAndExpectClose sends DELETE url and waits for c to be closed with code.
func deleteAndExpectClose(t *testing.T, url string, c *chatConn, code int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("DELETE %s: %v %v", url, resp, err)
	}
	resp.Body.Close()
	select {
	case got := <-c.closed:
		if got != code {
			t.Fatalf("after DELETE %s the socket closed with %d, want %d", url, got, code)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("after DELETE %s the socket was not closed", url)
	}
}
