package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/roomgate/roomgate/rooms"
)

type discardSink struct{ n int }

func (d *discardSink) message(op ws.OpCode, data []byte)    { d.n += len(data) }
func (d *discardSink) control(op ws.OpCode, payload []byte) {}

// BenchmarkParseFrames parses a read buffer of 64 small client frames, the
// shape of a busy socket's read. The buffer is reused: unmasking in place
// flips it between masked and unmasked, and both parse as binary frames.
func BenchmarkParseFrames(b *testing.B) {
	for _, size := range []int{16, 512, 8192} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			var buf []byte
			for range 64 {
				buf = append(buf, masked(ws.OpBinary, true, bytes.Repeat([]byte{'x'}, size))...)
			}
			var in inbound
			var sink discardSink
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				consumed, _, _, perr := parseFrames(buf, &in, 1<<20, &sink)
				if perr != nil || consumed != len(buf) {
					b.Fatalf("consumed %d of %d: %v", consumed, len(buf), perr)
				}
			}
		})
	}
}

// BenchmarkReadHeader compares decodeHeader with gobwas/ws's ReadHeader on
// a reused reader, as gobwas/ws's own BenchmarkReadHeader does.
func BenchmarkReadHeader(b *testing.B) {
	frame := masked(ws.OpText, true, bytes.Repeat([]byte{'x'}, 300))
	b.Run("decodeHeader", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := decodeHeader(frame); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ws.ReadHeaderBuffer", func(b *testing.B) {
		r := bytes.NewReader(frame)
		hb := make([]byte, ws.MaxHeaderSize-2)
		b.ReportAllocs()
		for b.Loop() {
			r.Reset(frame)
			if _, err := ws.ReadHeaderBuffer(r, hb); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSend writes frames through a socket's Send to a real TCP peer
// that discards them: the write path, queue included, with its allocations.
func BenchmarkSend(b *testing.B) {
	for _, size := range []int{32, 4096, 64 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			got := make(chan *socket, 1)
			ts := startServer(b, Options{MaxQueueBytes: 64 << 20, Router: captureRouter{got: got}})
			c, _, _, err := ws.Dial(context.Background(), ts.url+"/ws/echo/bench")
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			go io.Copy(io.Discard, c)
			sk := <-got
			payload := bytes.Repeat([]byte{'y'}, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if err := sk.Send(rooms.Frame{Op: rooms.Binary, Data: payload}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEchoRoundTrip is one client's message to the echo class and back
// over loopback, through the poller, a worker and the write path.
func BenchmarkEchoRoundTrip(b *testing.B) {
	ts := startServer(b, Options{})
	c, _, _, err := ws.Dial(context.Background(), ts.url+"/ws/echo/bench")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := []byte("a small chat-sized message, about sixty bytes long......")
	b.ReportAllocs()
	for b.Loop() {
		if err := wsutil.WriteClientText(c, msg); err != nil {
			b.Fatal(err)
		}
		if _, err := wsutil.ReadServerText(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEchoParallel runs round trips on 64 sockets at once.
func BenchmarkEchoParallel(b *testing.B) {
	ts := startServer(b, Options{})
	var mu sync.Mutex
	conns := make(chan net.Conn, 64)
	for i := range 64 {
		c, _, _, err := ws.Dial(context.Background(), fmt.Sprintf("%s/ws/echo/p%d", ts.url, i))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns <- c
	}
	msg := []byte("a small chat-sized message, about sixty bytes long......")
	b.SetParallelism(32) // 64 goroutines on 2 CPUs
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		c := <-conns
		mu.Unlock()
		for pb.Next() {
			if err := wsutil.WriteClientText(c, msg); err != nil {
				b.Error(err)
				return
			}
			if _, err := wsutil.ReadServerText(c); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// captureRouter hands the test each socket as it connects.
type captureRouter struct{ got chan *socket }

func (r captureRouter) HasClass(string) bool { return true }
func (r captureRouter) Connect(ctx context.Context, a rooms.Addr, s rooms.Socket, info rooms.ConnectInfo) error {
	r.got <- s.(*socket)
	return nil
}
func (r captureRouter) Message(context.Context, rooms.Addr, rooms.Socket, rooms.Frame) error {
	return nil
}
func (r captureRouter) Closed(rooms.Addr, rooms.Socket, int, string) {}
func (r captureRouter) Attach(rooms.Sockets)                         {}
