package rooms_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/gateway"
	"github.com/roomgate/roomgate/rooms"
	"github.com/roomgate/roomgate/storage/filestore"
)

// Poll counts votes: a client sends an option's name, and every socket in the
// room gets the tally. The tally is kept in storage, one key per option, so
// it survives restarts; the map is only a cache rebuilt by OnStart.
type Poll struct{ tally map[string]int }

func (p *Poll) OnStart(ctx context.Context, r *rooms.Room) error {
	p.tally = map[string]int{}
	kvs, err := r.Storage().List(ctx, rooms.ListOptions{Prefix: "vote/"})
	for _, kv := range kvs {
		p.tally[strings.TrimPrefix(kv.Key, "vote/")], _ = strconv.Atoi(string(kv.Value))
	}
	return err
}

func (p *Poll) OnConnect(ctx context.Context, r *rooms.Room, c *rooms.Conn) error {
	return c.SendJSON(p.tally)
}

func (p *Poll) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	option := string(f.Data)
	if len(option) == 0 || len(option) > 64 {
		return c.SendText(`{"error":"an option has 1 to 64 bytes"}`)
	}
	p.tally[option]++
	if err := r.Storage().Put("vote/"+option, []byte(strconv.Itoa(p.tally[option]))); err != nil {
		return err
	}
	return r.BroadcastJSON(p.tally) // sent once the vote is on disk
}

// Example registers the Poll class and votes over a real WebSocket.
func Example() {
	dir, _ := os.MkdirTemp("", "poll")
	defer os.RemoveAll(dir)
	store, _ := filestore.Open(dir)
	defer store.Close()
	reg := prometheus.NewRegistry()
	rt, _ := rooms.New(rooms.Options{Store: store, Metrics: reg})
	rt.Register("poll", func() rooms.Handler { return new(Poll) })

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv, _ := gateway.New(gateway.Options{Listener: ln, Router: rt, Admin: rt, Metrics: reg})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	go rt.Run(ctx)

	c, br, _, _ := ws.Dial(context.Background(), "ws://"+ln.Addr().String()+"/ws/poll/lunch")
	rw := struct {
		io.Reader
		io.Writer
	}{c, c}
	if br != nil {
		rw.Reader = br // the greeting came in the same read as the handshake's answer
	}
	for _, vote := range []string{"", "pizza", "tacos", "pizza"} {
		if vote != "" {
			wsutil.WriteClientText(c, []byte(vote))
		}
		reply, _ := wsutil.ReadServerText(rw)
		fmt.Println(string(reply))
	}
	c.Close()
	stop()
	<-done
	// Output:
	// {}
	// {"pizza":1}
	// {"pizza":1,"tacos":1}
	// {"pizza":2,"tacos":1}
}
