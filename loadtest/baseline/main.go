// Command baseline is the server Roomgate's benchmarks compare it with, in
// the same run, on the same machine. It is gobwas/ws used the way its
// README shows, with nothing of Roomgate's: no rooms, no storage, no event
// loop, no slow-consumer bookkeeping.
//
//   - /ws/counter/NAME: the bare fan-out. Every socket gets the current
//     count on connect; "inc" from any socket bumps it, and the new count is
//     encoded once and written to every socket of NAME.
//   - /ws/chat/NAME: the bare chat room. {"type":"say","text":T} from a
//     member is sent to every member as {"type":"message","seq":N,"text":T}.
//   - any other /ws/ path: echo, one goroutine per connection that reads a
//     message and writes it back.
//
// The counter and chat rooms persist nothing and write a broadcast of 256
// sockets or more from up to GOMAXPROCS goroutines, split as Roomgate
// splits it: they are what those loads cost the kernel and the Go runtime
// alone, the floor under Roomgate's figures.
//
// It serves /metrics with the same Go and process collectors as roomgate,
// so the harness measures both alike.
//
//	go run ./loadtest/baseline -addr 127.0.0.1:9090
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	flag.Parse()
	log.Printf("baseline server on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, handler()))
}

func handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var rooms sync.Map // path -> *room
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ready\n")) })
	mux.HandleFunc("/ws/", func(w http.ResponseWriter, r *http.Request) {
		conn, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		chat := strings.HasPrefix(r.URL.Path, "/ws/chat/")
		if !chat && !strings.HasPrefix(r.URL.Path, "/ws/counter/") {
			go echo(conn)
			return
		}
		v, _ := rooms.LoadOrStore(r.URL.Path, &room{chat: chat, conns: map[net.Conn]struct{}{}})
		go v.(*room).serve(conn)
	})
	return mux
}

func echo(conn net.Conn) {
	defer conn.Close()
	for {
		msg, op, err := wsutil.ReadClientData(conn)
		if err != nil {
			return
		}
		if err := wsutil.WriteServerMessage(conn, op, msg); err != nil {
			return
		}
	}
}

// room is a counter or a chat room, in memory only.
type room struct {
	chat  bool
	mu    sync.Mutex // held through a whole broadcast, so frames arrive in order
	conns map[net.Conn]struct{}
	seq   int64 // the count, or the last chat message's seq
}

func (rm *room) serve(conn net.Conn) {
	defer conn.Close()
	rm.mu.Lock()
	rm.conns[conn] = struct{}{}
	var err error
	if !rm.chat {
		err = wsutil.WriteServerText(conn, rm.encode(nil))
	}
	rm.mu.Unlock()
	defer func() {
		rm.mu.Lock()
		delete(rm.conns, conn)
		rm.mu.Unlock()
	}()
	for err == nil {
		var msg []byte
		if msg, _, err = wsutil.ReadClientData(conn); err != nil {
			return
		}
		var say struct{ Type, Text string }
		switch {
		case !rm.chat && string(msg) == "inc":
			rm.broadcast(nil)
		case rm.chat && json.Unmarshal(msg, &say) == nil && say.Type == "say":
			rm.broadcast(&say.Text)
		}
	}
}

// broadcast bumps seq and writes one pre-encoded frame to every socket.
func (rm *room) broadcast(text *string) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	rm.seq++
	frame, err := ws.CompileFrame(ws.NewTextFrame(rm.encode(text)))
	if err != nil {
		panic(err) // a server text frame always compiles
	}
	to := make([]net.Conn, 0, len(rm.conns))
	for c := range rm.conns {
		to = append(to, c)
	}
	parts := 1
	if len(to) >= 256 { // Roomgate's split (rooms.fanout): up to GOMAXPROCS, 128 sockets each at least
		parts = min(runtime.GOMAXPROCS(0), len(to)/128)
	}
	var wg sync.WaitGroup
	for p := range parts {
		wg.Go(func() {
			for i := p; i < len(to); i += parts {
				to[i].Write(frame) // a failed socket ends in its reader
			}
		})
	}
	wg.Wait()
}

func (rm *room) encode(text *string) []byte {
	if !rm.chat {
		return []byte(`{"type":"count","value":` + strconv.FormatInt(rm.seq, 10) + `}`)
	}
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		Seq  int64  `json:"seq"`
		Text string `json:"text"`
	}{"message", rm.seq, *text})
	return b
}
