package rooms

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomgate/roomgate/storage/filestore"
	"github.com/roomgate/roomgate/storage/redisstore"
	"github.com/roomgate/roomgate/storage/redisstore/redistest"
)

// countingSocket counts what it is sent; the gateway's write path has its
// own benchmarks, so these measure the runtime and the store alone.
type countingSocket struct {
	id   SocketID
	sent *atomic.Int64
	all  *answers // when set, told of each send
}

// answers closes done once want sends were counted: a benchmark's end
// comes with its last answer, not a poll after it.
type answers struct {
	want int64
	done chan struct{}
}

func (s countingSocket) ID() SocketID { return s.id }
func (s countingSocket) Send(f Frame) error {
	if n := s.sent.Add(1); s.all != nil && n == s.all.want {
		close(s.all.done)
	}
	return nil
}
func (s countingSocket) Close(int, string) {}

func (countingSocket) SetAutoResponse(*AutoResponse) {}
func (countingSocket) LastAutoResponse() time.Time   { return time.Time{} }

// writeOne writes one key per message, named by the message, and answers
// the sender once the write is committed.
type writeOne struct{}

func (writeOne) OnMessage(ctx context.Context, r *Room, c *Conn, f Frame) error {
	if err := r.Storage().Put(string(f.Data), []byte("v")); err != nil {
		return err
	}
	return c.Send(f)
}

// benchmarkPersisted sends b.N messages spread over n rooms, each writing
// one key, and reports persisted events per second: an event counts once
// its answer was released, i.e. once its write was durable.
//
// With onRedis the node is a one-node cluster on a local redis-server: the
// same events, committed by the Lua script with its fencing check, room
// leases held and renewed.
func benchmarkPersisted(b *testing.B, n int, onRedis bool) {
	o := Options{Metrics: prometheus.NewRegistry(), HibernateAfter: time.Hour} // no socket table: nothing may hibernate
	if onRedis {
		rs, err := redisstore.Open(context.Background(), redisstore.Options{URL: redistest.Start(b).URL()})
		if err != nil {
			b.Fatal(err)
		}
		defer rs.Close()
		o.Store, o.Coordinator, o.NodeID, o.Address = rs, rs, "bench", "127.0.0.1:1"
	} else {
		store, err := filestore.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		defer store.Close()
		o.Store = store
	}
	rt, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	rt.Register("w", func() Handler { return writeOne{} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rt.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	var sent atomic.Int64
	all := &answers{want: int64(b.N), done: make(chan struct{})}
	socks := make([]countingSocket, n)
	addrs := make([]Addr, n)
	for i := range socks {
		socks[i] = countingSocket{id: SocketID(i + 1), sent: &sent, all: all}
		addrs[i] = Addr{Class: "w", Room: fmt.Sprint("room-", i)}
		if err := rt.Connect(ctx, addrs[i], socks[i], ConnectInfo{}); err != nil {
			b.Fatal(err)
		}
	}
	producers := min(n, runtime.GOMAXPROCS(0))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < b.N; i += producers {
				room := i % n
				f := Frame{Op: Text, Data: fmt.Appendf(nil, "k%010d", i)}
				for {
					err := rt.Message(ctx, addrs[room], socks[room], f)
					if !errors.Is(err, ErrOverloaded) {
						break
					}
					runtime.Gosched() // the room's queue is full: let it drain
				}
			}
		}()
	}
	wg.Wait()
	<-all.done
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkPersistedEventsOneRoom is the throughput of one room whose every
// event writes a key. Target: 20,000/s.
func BenchmarkPersistedEventsOneRoom(b *testing.B) { benchmarkPersisted(b, 1, false) }

// BenchmarkPersistedEvents1000Rooms is the same spread over 1,000 rooms on
// one node. Target: 50,000/s.
func BenchmarkPersistedEvents1000Rooms(b *testing.B) { benchmarkPersisted(b, 1000, false) }

// BenchmarkPersistedEventsRedisOneRoom and ...Redis1000Rooms are the same
// against one local Redis (cluster mode on one node). Target: 30,000/s per
// node.
func BenchmarkPersistedEventsRedisOneRoom(b *testing.B)   { benchmarkPersisted(b, 1, true) }
func BenchmarkPersistedEventsRedis1000Rooms(b *testing.B) { benchmarkPersisted(b, 1000, true) }

type echoBack struct{}

func (echoBack) OnMessage(ctx context.Context, r *Room, c *Conn, f Frame) error { return c.Send(f) }

// BenchmarkEchoEvent is one message through a room that answers it and
// writes nothing: the mailbox, the event scope and the output path.
func BenchmarkEchoEvent(b *testing.B) {
	store, err := filestore.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	rt, _ := New(Options{Store: store, Metrics: prometheus.NewRegistry(), HibernateAfter: time.Hour}) // no socket table: nothing may hibernate
	rt.Register("e", func() Handler { return echoBack{} })
	ctx := context.Background()
	var sent atomic.Int64
	sock := countingSocket{id: 1, sent: &sent}
	a := Addr{Class: "e", Room: "r"}
	rt.Connect(ctx, a, sock, ConnectInfo{})
	f := Frame{Op: Text, Data: []byte("a small chat-sized message")}
	b.ReportAllocs()
	i := int64(0)
	for b.Loop() {
		i++
		for rt.Message(ctx, a, sock, f) != nil {
			runtime.Gosched()
		}
		for sent.Load() < i {
			runtime.Gosched()
		}
	}
}
