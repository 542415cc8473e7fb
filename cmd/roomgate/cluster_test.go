package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/storage/redisstore/redistest"
)

// node is one roomgate process of a test cluster.
type node struct {
	id, addr string
	args     []string
	cmd      *exec.Cmd
}

// startCluster runs n nodes on redisURL, each on its own port, as real
// processes: kill -9 and SIGSTOP are real.
func startCluster(t *testing.T, redisURL string, n int, extra ...string) []*node {
	t.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		addr := freeAddr(t)
		nd := &node{id: fmt.Sprintf("n%d", i+1), addr: addr}
		nd.args = append([]string{"-addr", addr, "-advertise", addr, "-node-id", nd.id, "-redis", redisURL,
			"-lease-ttl", "2s", "-log-level", "warn"}, extra...)
		nd.cmd = start(t, addr, nil, nd.args...)
		nodes[i] = nd
	}
	return nodes
}

// restart starts a node again after it was killed.
func (nd *node) restart(t *testing.T) {
	t.Helper()
	nd.cmd = start(t, nd.addr, nil, nd.args...)
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
	c, br, _, err := ws.Dial(context.Background(), "ws://"+addr+"/ws/chat/"+room+"?user="+user+"&name="+user)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	conn := net.Conn(c)
	if br != nil {
		conn = &bufferedConn{Conn: c, r: br}
	}
	cc := &chatConn{c: conn, msgs: make(chan chatMsg, 100000), closed: make(chan int, 1)}
	t.Cleanup(func() { c.Close() })
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
	nodes := startCluster(t, redis.URL(), 3)

	var listed struct{ Nodes []struct{ ID, Address string } }
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
				time.Sleep(2 * time.Millisecond)
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
