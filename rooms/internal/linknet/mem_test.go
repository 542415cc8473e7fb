package linknet

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// acceptor takes every link (or refuses with refuse) and hands its conns
// to the test.
type acceptor struct {
	self   Hello
	refuse *Refusal
	conns  chan net.Conn
	peers  chan Hello
	froms  chan string
	admits chan Hello // what Admit saw
}

func newAcceptor(node string) *acceptor {
	return &acceptor{self: Hello{Node: node, Incarnation: 7}, conns: make(chan net.Conn, 8), peers: make(chan Hello, 8), froms: make(chan string, 8), admits: make(chan Hello, 8)}
}

func (a *acceptor) Admit(_ context.Context, peer Hello, from string) (Hello, error) {
	a.froms <- from
	a.admits <- peer
	if a.refuse != nil {
		return Hello{}, a.refuse
	}
	return a.self, nil
}

func (a *acceptor) Accept(c net.Conn, peer Hello) {
	a.peers <- peer
	a.conns <- c
}

const hostA, hostB = "10.0.0.1:7000", "10.0.0.2:7000"

// pair dials from hostA to hostB on nw and returns both ends.
func pair(t *testing.T, nw *Network) (a, b net.Conn) {
	t.Helper()
	acc := newAcceptor("b")
	nw.Host(hostB).Listen(acc)
	a, ans, err := nw.Host(hostA).Dial(context.Background(), "b", hostB, Hello{Node: "a", Incarnation: 1, Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if ans != (Hello{Node: "b", Incarnation: 7}) {
		t.Fatalf("answer %+v", ans)
	}
	if from, peer := <-acc.froms, <-acc.peers; from != hostA || peer != (Hello{Node: "a", Incarnation: 1}) {
		t.Fatalf("b was dialed from %q by %+v; want %s by a with no secret", from, peer, hostA)
	}
	b = <-acc.conns
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// read reads what is there, or fails with the read's error.
func read(c net.Conn) (string, error) {
	b := make([]byte, 64)
	n, err := c.Read(b)
	return string(b[:n]), err
}

func TestMemConnCarriesBothWays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := pair(t, NewNetwork())
		write(t, a, "ping")
		if got, err := read(b); got != "ping" || err != nil {
			t.Fatalf("b read %q, %v", got, err)
		}
		write(t, b, "pong")
		if got, err := read(a); got != "pong" || err != nil {
			t.Fatalf("a read %q, %v", got, err)
		}
		if a.RemoteAddr().String() != hostB || b.RemoteAddr().String() != hostA {
			t.Fatalf("addresses %v → %v", a.LocalAddr(), a.RemoteAddr())
		}
		write(t, a, "last")
		a.Close()
		if got, err := read(b); got != "last" || err != nil {
			t.Fatalf("b read %q, %v before the close", got, err)
		}
		if _, err := read(b); err != io.EOF {
			t.Fatalf("b read %v after a closed; want EOF", err)
		}
		if _, err := b.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("a write to a closed end: %v; want EPIPE", err)
		}
		if _, err := read(a); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("a read on a closed end: %v", err)
		}
	})
}

// A delayed frame arrives exactly the delay later, and frames keep their
// order when the delay shrinks.
func TestMemDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := NewNetwork()
		a, b := pair(t, nw)
		nw.Delay(hostA, hostB, 100*time.Millisecond)
		start := time.Now()
		write(t, a, "slow")
		nw.Delay(hostA, hostB, 0)
		write(t, a, "fast")
		if got, _ := read(b); got != "slow" || time.Since(start) != 100*time.Millisecond {
			t.Fatalf("read %q after %v; want slow after 100ms", got, time.Since(start))
		}
		if got, _ := read(b); got != "fast" {
			t.Fatalf("then %q; want fast, never ahead of slow", got)
		}
		nw.Delay(hostB, hostA, 30*time.Millisecond)
		start = time.Now()
		pair(t, nw)
		if took := time.Since(start); took != 30*time.Millisecond {
			t.Fatalf("a dial took %v; want the round trip, 30ms", took)
		}
	})
}

// From a Drop on, nothing arrives on that conn again, even after a heal:
// the reader's deadline ends the wait; the other way still works.
func TestMemDropStallsTheConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := NewNetwork()
		a, b := pair(t, nw)
		write(t, a, "1")
		nw.Drop(hostA, hostB)
		write(t, a, "2")
		nw.Heal(hostA, hostB)
		write(t, a, "3")
		if got, _ := read(b); got != "1" {
			t.Fatalf("read %q; want what was sent before the drop", got)
		}
		start := time.Now()
		b.SetReadDeadline(start.Add(2 * time.Second))
		if got, err := read(b); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) != 2*time.Second {
			t.Fatalf("read %q, %v after %v; want a timeout at the deadline", got, err, time.Since(start))
		}
		write(t, b, "back")
		if got, _ := read(a); got != "back" {
			t.Fatalf("the other way: %q", got)
		}
		a.Close()
		b.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := read(b); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read %v; the close is lost with the rest", err)
		}
		if _, _, err := nw.Host(hostA).Dial(context.Background(), "b", hostB, Hello{Node: "a"}); err != nil {
			t.Fatalf("a dial after the heal: %v", err)
		}
	})
}

// A writer whose peer reads nothing fills the window and blocks until its
// deadline, as on a socket.
func TestMemWriterBlocksWhenTheWindowIsFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := NewNetwork()
		a, _ := pair(t, nw)
		nw.Drop(hostA, hostB)
		start := time.Now()
		a.SetWriteDeadline(start.Add(time.Second))
		n, err := a.Write(make([]byte, window+1))
		if n != window || !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) != time.Second {
			t.Fatalf("wrote %d, %v after %v; want %d, then a timeout at the deadline", n, err, time.Since(start), window)
		}
	})
}

// A dial across a partition hangs until its context ends, or goes through
// once the partition heals; conns across it stall both ways.
func TestMemPartition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := NewNetwork()
		a, b := pair(t, nw)
		nw.Partition(hostA, hostB)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		if _, _, err := nw.Host(hostB).Dial(ctx, "a", hostA, Hello{Node: "b"}); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 2*time.Second {
			t.Fatalf("a dial across the partition: %v after %v; want the dial's deadline", err, time.Since(start))
		}
		write(t, a, "lost")
		write(t, b, "lost too")
		for _, c := range []net.Conn{a, b} {
			c.SetReadDeadline(time.Now().Add(time.Second))
			if got, err := read(c); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read %q, %v across the partition", got, err)
			}
		}
		dialed := make(chan error)
		go func() {
			_, _, err := nw.Host(hostA).Dial(context.Background(), "b", hostB, Hello{Node: "a"})
			dialed <- err
		}()
		time.Sleep(300 * time.Millisecond) // fake time: the dial hangs meanwhile
		start = time.Now()
		nw.Heal(hostA, hostB)
		if err := <-dialed; err != nil || time.Since(start) != 0 {
			t.Fatalf("the held dial after the heal: %v after %v", err, time.Since(start))
		}
	})
}

func TestMemReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := NewNetwork()
		a, b := pair(t, nw)
		nw.Delay(hostA, hostB, time.Hour)
		write(t, a, "in flight")
		if nw.Open(hostA, hostB) != 1 {
			t.Fatalf("%d conns open; want 1", nw.Open(hostA, hostB))
		}
		readErr := make(chan error)
		go func() { _, err := b.Read(make([]byte, 8)); readErr <- err }()
		synctest.Wait()
		nw.Reset(hostB, hostA)
		if err := <-readErr; !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("the waiting read: %v; want a reset", err)
		}
		if _, err := a.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("a write after the reset: %v", err)
		}
		if nw.Open(hostA, hostB) != 0 {
			t.Fatalf("%d conns open after the reset", nw.Open(hostA, hostB))
		}
	})
}

// A dial where nobody listens is refused at once; one the acceptor turns
// away carries its status, as over TCP; one answered by another node than
// dialed fails.
func TestMemDialRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nw := NewNetwork()
		if _, _, err := nw.Host(hostA).Dial(context.Background(), "b", hostB, Hello{Node: "a"}); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial to nobody: %v", err)
		}
		acc := newAcceptor("b")
		acc.refuse = &Refusal{Status: http.StatusForbidden, Code: "forbidden", Message: "no"}
		stop := nw.Host(hostB).Listen(acc)
		_, _, err := nw.Host(hostA).Dial(context.Background(), "b", hostB, Hello{Node: "a"})
		if err == nil || err.Error() != "link to "+hostB+" refused: 403 Forbidden" {
			t.Fatalf("refused dial: %v", err)
		}
		acc.refuse = nil
		if _, _, err := nw.Host(hostA).Dial(context.Background(), "c", hostB, Hello{Node: "a"}); err == nil {
			t.Fatal("a dial answered by b when c was dialed succeeded")
		}
		stop()
		if _, _, err := nw.Host(hostA).Dial(context.Background(), "b", hostB, Hello{Node: "a"}); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial after stop: %v", err)
		}
	})
}
