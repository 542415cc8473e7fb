package gateway

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// fdGauge tells whether the process is near its open-file limit. Past the
// soft line (RLIMIT_NOFILE minus the reserve) new handshakes are refused
// with 503 and plain HTTP keeps only health checks and metrics, each on a
// connection closed after its answer, so the last descriptors go to those
// and to the store and links, not to accept failing with EMFILE for
// everyone.
//
// The count comes from a census of /proc/self/fd, which costs about 4 ms
// at 18,000 descriptors, so it runs at most every censusEvery, and only
// when a handshake or request asks; meanwhile each accepted connection
// adds one. That errs on the side of refusing, so once the estimate
// reaches the line a census confirms it, at most every censusNear: under a
// flood at the line that is under a tenth of a core, and the error is at
// most that long's accepts.
type fdGauge struct {
	limit int64        // RLIMIT_NOFILE
	soft  atomic.Int64 // past this many open descriptors, refuse; tests move it
	count atomic.Int64 // at the last census, plus connections accepted since
	at    atomic.Int64 // when the last census ran, Unix nanoseconds
	busy  atomic.Bool  // a census is running; its buf is in use
	over  atomic.Bool  // keep-alive is off: the last census was past soft (see census)
	buf   []byte

	// onChange hears each crossing of the line, from the goroutine whose
	// census saw it. Run sets it before it accepts anything.
	onChange atomic.Pointer[func(over bool)]
}

const (
	censusEvery = time.Second
	censusNear  = 50 * time.Millisecond
)

// newFDGauge measures the limit and takes a first census. reserve 0 means
// the default: 5% of the limit, from 64 to 4096 descriptors.
func newFDGauge(reserve int) (*fdGauge, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("gateway: read open-file limit: %w", err)
	}
	limit := int64(min(lim.Cur, 1<<40))
	if reserve == 0 {
		reserve = int(min(max(limit/20, 64), 4096))
	}
	if int64(reserve) >= limit {
		return nil, fmt.Errorf("gateway: DescriptorReserve %d leaves nothing under the open-file limit %d", reserve, limit)
	}
	g := &fdGauge{limit: limit, buf: make([]byte, 16<<10)}
	g.soft.Store(limit - int64(reserve))
	n, err := countFDs(g.buf)
	if err != nil {
		return nil, fmt.Errorf("gateway: count open descriptors: %w", err)
	}
	g.count.Store(n)
	g.at.Store(time.Now().UnixNano())
	return g, nil
}

// estimated reports whether the estimate is past the line, without a
// census: for the accept loop, which must not stop for one.
func (g *fdGauge) estimated() bool { return g.count.Load() >= g.soft.Load() }

// accepted counts a connection the census has not seen yet.
func (g *fdGauge) accepted(n int64) { g.count.Add(n) }

// pressed reports whether the process is past its soft line.
func (g *fdGauge) pressed() bool {
	now := time.Now().UnixNano()
	n, age := g.count.Load(), now-g.at.Load()
	soft := g.soft.Load()
	if (age >= int64(censusEvery) || n >= soft && age >= int64(censusNear)) && g.busy.CompareAndSwap(false, true) {
		n = g.census(now)
		g.busy.Store(false)
	}
	return n >= soft
}

// census counts the open descriptors; only the holder of busy (or the
// constructor) calls it. A failed count keeps the last one.
func (g *fdGauge) census(now int64) int64 {
	n, err := countFDs(g.buf)
	if err != nil {
		return g.count.Load()
	}
	g.count.Store(n)
	g.at.Store(now)
	// Keep-alive goes back on a quarter of the reserve under the line, not
	// at it, so a node hovering at the line does not flap (and log) at
	// every census.
	soft := g.soft.Load()
	was := g.over.Load()
	over := n >= soft || was && n >= soft-(g.limit-soft)/4
	if g.over.Swap(over) != over {
		if f := g.onChange.Load(); f != nil {
			(*f)(over)
		}
	}
	return n
}

// countFDs counts the entries of /proc/self/fd with getdents into buf, so
// a census allocates nothing, however many descriptors there are.
func countFDs(buf []byte) (int64, error) {
	dir, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(dir)
	var n int64
	for {
		size, err := unix.Getdents(dir, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if size == 0 {
			break
		}
		// linux_dirent64: ino u64, off i64, reclen u16, type u8, name.
		for off := 0; off+19 <= size; {
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			if reclen == 0 {
				break
			}
			if name := buf[off+19]; name != '.' {
				n++
			}
			off += reclen
		}
	}
	return n - 1, nil // the directory's own descriptor
}
