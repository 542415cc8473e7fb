package main

import (
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/internal/testkit"
)

type chatMsg struct {
	Type    string
	Seq     int
	Text    string
	User    struct{ ID, Name string }
	Value   int // counter
	History []chatMsg
}

func chatDial(t *testing.T, addr, query string) net.Conn {
	t.Helper()
	return testkit.Dial(t, "ws://"+addr+"/ws/chat/burst"+query)
}

// TestNoReceivedMessageIsLost runs a burst of chat messages into a node and
// stops it mid-burst, with kill -9 and with SIGTERM. After a restart on the
// same data directory, every message any socket had received must be in the
// room's history: a send leaves the node only after its write is on disk.
func TestNoReceivedMessageIsLost(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			data := t.TempDir()
			addr := testkit.FreeAddr(t)
			cmd := start(t, addr, nil, "-addr", addr, "-data", data)

			var mu sync.Mutex
			received := map[int]string{}
			reached := make(chan struct{}) // closed at the 200th message received
			var wg sync.WaitGroup
			for i := range 3 {
				c := chatDial(t, addr, fmt.Sprintf("?user=r%d", i))
				defer c.Close()
				wg.Add(1)
				go func() { // receiver: records until the node goes away
					defer wg.Done()
					for {
						c.SetReadDeadline(time.Now().Add(10 * time.Second))
						b, op, err := wsutil.ReadServerData(c)
						if err != nil || op != ws.OpText {
							return
						}
						var m chatMsg
						json.Unmarshal(b, &m)
						if m.Type == "message" {
							mu.Lock()
							_, seen := received[m.Seq] // each receiver gets every message
							received[m.Seq] = m.Text
							if len(received) == 200 && !seen {
								close(reached)
							}
							mu.Unlock()
						}
					}
				}()
			}
			sender := chatDial(t, addr, "?user=sender")
			defer sender.Close()
			go func() {
				for n := 0; n < 900; n++ {
					if wsutil.WriteClientText(sender, []byte(fmt.Sprintf(`{"type":"say","text":"m%d"}`, n))) != nil {
						return
					}
				}
			}()
			select { // mid-burst
			case <-reached:
			case <-time.After(20 * time.Second):
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("%d of 200 messages received within 20 s", len(received))
			}
			cmd.Process.Signal(sig)
			cmd.Wait()
			wg.Wait()

			start(t, addr, nil, "-addr", addr, "-data", data)
			c := chatDial(t, addr, "?since=0")
			defer c.Close()
			var w chatMsg
			for w.Type != "welcome" {
				b, err := wsutil.ReadServerText(c)
				if err != nil {
					t.Fatal(err)
				}
				json.Unmarshal(b, &w)
			}
			history := map[int]string{}
			for _, m := range w.History {
				history[m.Seq] = m.Text
			}
			mu.Lock()
			defer mu.Unlock()
			for seq, text := range received {
				if history[seq] != text {
					t.Errorf("message %d %q was received but after the restart the history has %q", seq, text, history[seq])
				}
			}
			for seq := 1; seq <= len(history); seq++ {
				if _, ok := history[seq]; !ok {
					t.Errorf("history has a gap at %d", seq)
				}
			}
			t.Logf("%d messages received before %v; %d in the history after the restart", len(received), sig, len(history))
		})
	}
}
