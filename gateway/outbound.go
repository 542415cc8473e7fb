package gateway

import (
	"sync"

	"golang.org/x/sys/unix"
)

// outbound is a socket's queue of frames the kernel has not accepted yet.
// It exists only while the client reads slower than the socket is written;
// the common case writes straight to the kernel and never allocates one.
type outbound struct {
	bufs    [][]byte // encoded frames; bufs[0][head:] goes next
	head    int
	bytes   int  // bytes not yet written
	started bool // the kernel already took the start of bufs[0]'s frame
}

// maxIovecs bounds one writev; the kernel allows 1024.
const maxIovecs = 64

// pushTail queues the part of hdr+payload past the first written bytes.
// The copy is what lets Send return while the caller reuses payload.
func (o *outbound) pushTail(hdr, payload []byte, written int) {
	n := len(hdr) + len(payload) - written
	b := make([]byte, 0, n)
	if written < len(hdr) {
		b = append(b, hdr[written:]...)
		b = append(b, payload...)
	} else {
		b = append(b, payload[written-len(hdr):]...)
	}
	if written > 0 && len(o.bufs) == 0 {
		o.started = true // b is the tail of a frame the kernel took the start of
	}
	o.bufs = append(o.bufs, b)
	o.bytes += n
}

// writeTo writes as much as the kernel takes in one writev and returns how
// many bytes that was.
func (o *outbound) writeTo(fd int) (int, error) {
	var vec [maxIovecs][]byte
	iov := vec[:0]
	for i, b := range o.bufs {
		if i == maxIovecs {
			break
		}
		if i == 0 {
			b = b[o.head:]
		}
		iov = append(iov, b)
	}
	n, err := unix.Writev(fd, iov)
	if n > 0 {
		o.advance(n)
	}
	return n, err
}

func (o *outbound) advance(n int) {
	o.bytes -= n
	for n > 0 {
		left := len(o.bufs[0]) - o.head
		if n < left {
			o.head += n
			o.started = true
			return
		}
		n -= left
		o.bufs[0] = nil
		o.bufs = o.bufs[1:]
		o.head, o.started = 0, false
	}
}

// dropUnstarted discards every frame not yet begun. A frame the kernel took
// part of stays: cutting it would corrupt the stream before the close frame.
func (o *outbound) dropUnstarted() {
	keep := 0
	if o.started {
		keep = 1
	}
	for i := keep; i < len(o.bufs); i++ {
		o.bufs[i] = nil
	}
	o.bufs = o.bufs[:keep]
	o.bytes = 0
	if keep == 1 {
		o.bytes = len(o.bufs[0]) - o.head
	}
}

// smallFrame is the largest payload writeFrame copies next to its header to
// send both with one write(2); larger ones go out with writev(2) uncopied.
const smallFrame = 4096

// writeFrame writes a frame without queueing, returning how many bytes the
// kernel took (-1 with an error).
func writeFrame(fd int, hdr, payload []byte) (int, error) {
	if len(payload) <= smallFrame {
		var b [maxServerHeader + smallFrame]byte
		n := copy(b[:], hdr)
		n += copy(b[n:], payload)
		return unix.Write(fd, b[:n])
	}
	var h [maxServerHeader]byte
	return writevFrame(fd, h, copy(h[:], hdr), payload)
}

// writevFrame sends a large frame uncopied. It takes the header by value so
// only its own copy escapes to the heap through writev's iovecs, and the
// small-frame path above stays allocation-free.
//
//go:noinline
func writevFrame(fd int, h [maxServerHeader]byte, hlen int, payload []byte) (int, error) {
	return unix.Writev(fd, [][]byte{h[:hlen], payload})
}

// readBufferSize is the buffer a reader borrows for one turn; a socket keeps
// it only while a frame is incomplete.
const readBufferSize = 16 << 10

// maxReadsPerTurn bounds one socket's hold on a worker: after this many full
// reads it goes to the back of the queue.
const maxReadsPerTurn = 8

var readBuffers = sync.Pool{New: func() any { return new([readBufferSize]byte) }}

func getReadBuffer() []byte { return readBuffers.Get().(*[readBufferSize]byte)[:0] }

// putReadBuffer returns a pooled buffer; buffers grown for large frames are
// left to the garbage collector.
func putReadBuffer(b []byte) {
	if cap(b) == readBufferSize {
		readBuffers.Put((*[readBufferSize]byte)(b[:readBufferSize]))
	}
}

var (
	smallBuffers = sync.Pool{New: func() any { return new([smallLeftover]byte) }}
	inbounds     = sync.Pool{New: func() any { return new(inbound) }}
)

func getSmallBuffer() []byte { return smallBuffers.Get().(*[smallLeftover]byte)[:0] }

func putSmallBuffer(b []byte) {
	if cap(b) == smallLeftover {
		smallBuffers.Put((*[smallLeftover]byte)(b[:smallLeftover]))
	}
}

func getInbound() *inbound { return inbounds.Get().(*inbound) }

func putInbound(in *inbound) {
	*in = inbound{}
	inbounds.Put(in)
}

// grow returns a buffer with b's contents and room for at least n bytes.
func grow(b []byte, n int) []byte {
	if n <= cap(b) {
		return b
	}
	nb := make([]byte, len(b), n)
	copy(nb, b)
	putReadBuffer(b)
	return nb
}
