package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/roomgate/roomgate/rooms"
)

// A socket is one upgraded WebSocket connection whose descriptor the gateway
// owns outright (see detach). While idle it is this struct, a slot in the
// fdTable and an epoll registration: no goroutine, no buffer.
//
// Three roles touch a socket, each with its own guard:
//   - the reader: whoever holds reads > 0, one at a time. It reads and
//     parses frames, calls the Router (Connect, Message, Closed, in order)
//     and owns in and lingering.
//   - writers: any goroutine, serialized by wmu. A write goes straight to the
//     kernel when nothing is queued; what the kernel refuses waits in out
//     until epoll reports the socket writable.
//   - the descriptor: fdRefs counts syscalls in flight, and the descriptor is
//     closed only once the socket has ended and the count is zero, so a
//     reused descriptor number can never be touched through a stale socket.
//
// Lock order (doc.go): wmu comes before a poller's mu and after the
// Router's locks; the Router is never called with wmu held.
type socket struct {
	id   rooms.SocketID
	fd   int
	srv  *Server
	addr rooms.Addr

	fdRefs  atomic.Int32 // in-flight syscalls, plus endedBit once the socket ended
	reads   atomic.Int32 // readiness events since the reader last caught up
	stalled atomic.Int64 // output is queued and waits for EPOLLOUT: since when the kernel took none of it, Unix nanoseconds; 0 when nothing is queued. The janitor reads it
	closing atomic.Bool  // a close frame was queued or the socket ended: deliver no more data
	partial atomic.Int64 // since when in has been set, Unix nanoseconds; 0 while idle. The janitor reads it
	auto    atomic.Pointer[rooms.AutoResponse]
	autoAt  atomic.Int64 // when auto last answered, Unix nanoseconds
	expires atomic.Int64 // when its token expires, Unix nanoseconds; 0: never. The janitor reads it

	// Reader-owned.
	in        *inbound // unfinished input; nil when idle
	lingering bool     // the connection failed: discard input until EOF
	refused   bool     // Connect failed: the room never had it, so it hears no Closed

	quota *socketQuota // reader-owned too: its share of the limits; nil while no cap needs one (limits.go)

	wmu        sync.Mutex
	out        *outbound // frames the kernel has not taken yet; nil when empty
	wstate     uint8
	peerClosed bool // the peer's close frame arrived: end once our reply is written
	linger     bool // after our close frame, shut down writes and drain input
	endCode    int
	endReason  string
	timer      *time.Timer // ends a close handshake the peer never finishes
}

const endedBit = 1 << 30

// Write states, guarded by wmu.
const (
	wsOpen      uint8 = iota
	wsClosing         // our close frame is queued
	wsCloseSent       // our close frame is written
	wsEnded           // the socket is finished; only the reader's report remains
)

// ID implements rooms.Socket.
func (s *socket) ID() rooms.SocketID { return s.id }

// Send implements rooms.Socket.
func (s *socket) Send(f rooms.Frame) error {
	if f.Op != rooms.Text && f.Op != rooms.Binary {
		return rooms.ErrOpcode // control frames belong to the gateway's own state machine
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wstate != wsOpen {
		return rooms.ErrClosed
	}
	return s.sendLocked(ws.OpCode(f.Op), f.Data, true)
}

// Close implements rooms.Socket.
func (s *socket) Close(code int, reason string) {
	s.wmu.Lock()
	s.closeLocked(code, reason, false)
	s.wmu.Unlock()
}

// SetAutoResponse implements rooms.Socket.
func (s *socket) SetAutoResponse(a *rooms.AutoResponse) { s.auto.Store(a) }

// LastAutoResponse implements rooms.Socket.
func (s *socket) LastAutoResponse() time.Time {
	if at := s.autoAt.Load(); at != 0 {
		return time.Unix(0, at)
	}
	return time.Time{}
}

// autoRespond answers a message equal to the room's auto-response request,
// here at the edge: the room may be hibernated and must stay so.
func (s *socket) autoRespond(op ws.OpCode, data []byte) bool {
	a := s.auto.Load()
	if a == nil || op != ws.OpText || string(data) != string(a.Request) {
		return false
	}
	s.autoAt.Store(time.Now().UnixNano())
	s.srv.m.autoReplies.Inc()
	s.wmu.Lock()
	if s.wstate == wsOpen {
		s.sendLocked(ws.OpText, a.Response, true) // a slow or failed socket ends itself
	}
	s.wmu.Unlock()
	return true
}

// sendLocked writes one frame, or queues what the kernel does not take.
// bounded applies the slow-consumer limit; close frames skip it.
//
// Every bounded frame counts against MaxQueueBytes, the first one a socket
// gets included: behind a queue the whole frame must fit, and with nothing
// queued the frame itself must fit, since the kernel may take as little as
// nothing of it and the rest is queued. So the queue never holds more than
// MaxQueueBytes. A frame larger than the bound could never be sent whole
// to a client that stops reading, and letting it through is what once let
// 1,000 silent sockets hold 710 MB of a room's 4 MB welcomes: it is
// refused, and the socket closed with 1009.
func (s *socket) sendLocked(op ws.OpCode, payload []byte, bounded bool) error {
	var hb [maxServerHeader]byte
	hdr := appendHeader(hb[:0], op, len(payload))
	if bounded {
		size, queued := len(hdr)+len(payload), 0
		if s.out != nil {
			queued = s.out.bytes
		}
		switch {
		case size > s.srv.o.MaxQueueBytes:
			s.srv.m.badInput.WithLabelValues("send_too_big").Inc()
			if s.out != nil {
				s.out.dropUnstarted()
			}
			s.closeLocked(closeTooBig, "message too big for the send queue", false)
			return rooms.ErrTooBig
		case queued+size > s.srv.o.MaxQueueBytes:
			s.slowLocked()
			return rooms.ErrSlow
		}
	}
	if !s.acquire() {
		return rooms.ErrClosed
	}
	defer s.release()
	if s.out == nil {
		n, err := writeFrame(s.fd, hdr, payload)
		if err != nil && err != unix.EAGAIN && err != unix.EINTR {
			s.terminateLocked(closeAbnormal, "write failed")
			return rooms.ErrClosed
		}
		s.srv.m.framesOut.Inc()
		if n == len(hdr)+len(payload) {
			s.drainedLocked()
			return nil
		}
		s.out = new(outbound)
		s.out.pushTail(hdr, payload, max(n, 0))
	} else {
		s.srv.m.framesOut.Inc()
		s.out.pushTail(hdr, payload, 0)
	}
	return s.flushLocked()
}

// flushLocked writes queued frames until the queue is empty or the kernel's
// buffer is full. stalled is set before the write that may fail with
// EAGAIN, so the EPOLLOUT edge that follows can never be missed; it moves
// on whenever the kernel takes bytes, so the janitor closes only a socket
// whose client read nothing for WriteTimeout.
func (s *socket) flushLocked() error {
	if s.out == nil {
		return nil
	}
	if !s.acquire() {
		return rooms.ErrClosed
	}
	defer s.release()
	now := time.Now().UnixNano()
	s.stalled.CompareAndSwap(0, now)
	for s.out.bytes > 0 {
		n, err := s.out.writeTo(s.fd)
		if n > 0 {
			s.stalled.Store(now)
		}
		if err == unix.EAGAIN {
			return nil
		}
		if err != nil && err != unix.EINTR {
			s.terminateLocked(closeAbnormal, "write failed")
			return rooms.ErrClosed
		}
	}
	s.out = nil
	s.stalled.Store(0)
	s.drainedLocked()
	return nil
}

// drainedLocked runs when every queued byte reached the kernel: if that
// included our close frame, the close handshake moves on.
func (s *socket) drainedLocked() {
	if s.wstate != wsClosing {
		return
	}
	s.wstate = wsCloseSent
	switch {
	case s.peerClosed:
		// Our frame answered theirs: the handshake is complete, and the
		// server closes the TCP connection first (RFC 6455 §7.1.1).
		s.terminateLocked(s.endCode, s.endReason)
	case s.linger:
		// A failed connection: send FIN after the close frame, so the peer
		// reads the frame before any reset, and drain its input until EOF.
		if s.acquire() {
			unix.Shutdown(s.fd, unix.SHUT_WR)
			s.release()
		}
	}
}

// closeLocked queues a close frame and stops delivering data. The socket
// ends when the peer answers, or after CloseTimeout.
func (s *socket) closeLocked(code int, reason string, linger bool) {
	if s.wstate != wsOpen {
		return
	}
	s.wstate = wsClosing
	s.closing.Store(true)
	s.endCode, s.endReason, s.linger = code, reason, linger
	s.armCloseTimerLocked(code, reason)
	s.srv.m.closesSent.WithLabelValues(codeLabel(code)).Inc()
	s.sendLocked(ws.OpClose, closeBody(code, reason), false)
}

// armCloseTimerLocked ends the socket with code after CloseTimeout unless
// the close handshake finishes first. The timer's callback runs on a
// goroutine of its own, so the Server counts the timer in closeTimers
// until it is stopped or its callback has returned, and Run waits for it.
func (s *socket) armCloseTimerLocked(code int, reason string) {
	s.srv.closeTimers.Add(1)
	s.timer = time.AfterFunc(s.srv.o.CloseTimeout, func() {
		defer s.srv.closeTimers.Done()
		s.terminate(code, reason)
	})
}

// slowLocked closes a socket whose queue overflowed. Frames not yet started
// are dropped now: the client was never going to read them in time, and
// their memory is the point of the limit (DESIGN §3.5).
func (s *socket) slowLocked() {
	s.srv.m.badInput.WithLabelValues("slow_consumer").Inc()
	if s.out != nil {
		s.out.dropUnstarted()
	}
	s.closeLocked(closePolicy, "slow consumer", false)
}

// closeIfStalled closes the socket as a slow consumer if its queued output
// has waited since before cutoff (Unix nanoseconds) without the kernel
// taking a byte of it: its client stopped reading. Called by the janitor.
func (s *socket) closeIfStalled(cutoff int64) bool {
	if since := s.stalled.Load(); since == 0 || since >= cutoff {
		return false
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	since := s.stalled.Load()
	if since == 0 || since >= cutoff || s.wstate != wsOpen {
		// Drained meanwhile, or closing already: a close handshake has
		// its own deadline (CloseTimeout).
		return false
	}
	s.slowLocked()
	return true
}

// peerCloseLocked handles the peer's close frame.
func (s *socket) peerCloseLocked(payload []byte) {
	s.peerClosed = true
	switch s.wstate {
	case wsClosing:
		return // drainedLocked ends the socket once our own close frame is out
	case wsCloseSent:
		s.terminateLocked(s.endCode, s.endReason)
		return
	case wsEnded:
		return
	}
	code, reason := closeNoStatus, ""
	if len(payload) >= 2 {
		code = int(binary.BigEndian.Uint16(payload))
		reason = string(payload[2:])
	}
	s.wstate = wsClosing
	s.closing.Store(true)
	s.endCode, s.endReason = code, reason
	s.armCloseTimerLocked(code, reason)
	// Echo the code, as RFC 6455 §5.5.1 suggests; no code, no body.
	s.sendLocked(ws.OpClose, payload[:min(len(payload), 2)], false)
}

// terminate ends the socket now: no more reads or writes, the descriptor
// closes as soon as no syscall uses it, and the reader reports Closed.
func (s *socket) terminate(code int, reason string) {
	s.wmu.Lock()
	s.terminateLocked(code, reason)
	s.wmu.Unlock()
}

func (s *socket) terminateLocked(code int, reason string) {
	if s.wstate == wsEnded {
		return
	}
	if s.wstate == wsOpen {
		s.endCode, s.endReason = code, reason // otherwise the close handshake's code stands
	}
	s.wstate = wsEnded
	s.closing.Store(true)
	if s.timer != nil {
		if s.timer.Stop() {
			s.srv.closeTimers.Done() // its callback will never run
		}
		s.timer = nil
	}
	s.out = nil
	s.stalled.Store(0)
	s.markEnded()
	s.srv.kickReader(s)
}

// acquire takes a reference on the descriptor for one syscall; it fails once
// the socket ended.
func (s *socket) acquire() bool {
	for {
		v := s.fdRefs.Load()
		if v&endedBit != 0 {
			return false
		}
		if s.fdRefs.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

func (s *socket) release() {
	if s.fdRefs.Add(-1) == endedBit {
		s.closeFD()
	}
}

func (s *socket) markEnded() {
	for {
		v := s.fdRefs.Load()
		if v&endedBit != 0 {
			return
		}
		if s.fdRefs.CompareAndSwap(v, v|endedBit) {
			if v == 0 {
				s.closeFD()
			}
			return
		}
	}
}

func (s *socket) ended() bool { return s.fdRefs.Load()&endedBit != 0 }

// closeFD frees the table slot before the descriptor, so the number can be
// reused by a new socket without a stale slot pointing here.
func (s *socket) closeFD() {
	s.srv.fds.remove(s.fd, s)
	unix.Close(s.fd)
}

// readTurn runs on a worker while it holds the reader role. It reads what is
// available, parses and delivers it, and gives the role up only when no
// readiness event arrived meanwhile, so an edge is never lost.
func (s *socket) readTurn(ctx context.Context, w *worker) {
	for {
		seen := s.reads.Load()
		if s.ended() {
			s.finish(w)
			return // reads stays positive: nothing schedules this socket again
		}
		if !s.acquire() {
			continue // ended meanwhile: finish on the next pass
		}
		more, finished := s.readAvailable(ctx, w)
		s.release()
		s.markPartial(finished)
		if more {
			s.srv.pollerOf(s).push(task{s}) // budget spent: to the back of the line, reader role kept
			return
		}
		if s.reads.CompareAndSwap(seen, 0) {
			return
		}
	}
}

// readAvailable reads until EAGAIN, EOF or the per-turn budget, and reports
// whether input may remain and whether a message was finished. Only the
// reader calls it, holding a reference.
func (s *socket) readAvailable(ctx context.Context, w *worker) (more, finished bool) {
	w.in = inbound{}
	if s.in != nil {
		w.in = *s.in
		putInbound(s.in)
		s.in = nil
	}
	buf := w.in.buf
	if cap(buf) < readBufferSize {
		small := buf // nil, or a small leftover
		buf = append(getReadBuffer(), small...)
		putSmallBuffer(small)
	}
	w.sink = sink{ctx: ctx, s: s}
	defer func() { finished = w.sink.messages > 0; w.sink = sink{} }()
	// What is kept between turns is unfinished input, but for frames a
	// client sent with its upgrade request: those are parsed before any
	// read, as the socket may stay silent until they are answered. (For
	// unfinished input the parse stops at once, at the same frame.)
	if len(buf) > 0 && !s.lingering {
		buf = s.parse(w, buf)
	}
	for range maxReadsPerTurn {
		if len(buf) == cap(buf) {
			buf = grow(buf, 2*cap(buf))
		}
		n, err := unix.Read(s.fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			s.keepInput(w, buf)
			return false, false
		}
		if n <= 0 {
			putReadBuffer(buf)
			s.terminate(closeAbnormal, "connection lost")
			return false, false
		}
		if s.lingering {
			continue // a failed connection: the rest of its input means nothing
		}
		buf = s.parse(w, buf[:len(buf)+n])
	}
	s.keepInput(w, buf)
	return true, false
}

// parse hands every complete frame in buf on and returns what is left of
// it, at the front, grown toward the next frame's size as its bytes
// arrive (never ahead of them: a peer cannot make us allocate by lying).
// After a protocol error nothing is left.
func (s *socket) parse(w *worker, buf []byte) []byte {
	consumed, want, frames, perr := parseFrames(buf, &w.in, s.srv.o.MaxMessageBytes, &w.sink)
	s.srv.m.framesIn.Add(float64(frames))
	if perr != nil {
		s.fail(perr)
		return buf[:0]
	}
	rest := copy(buf, buf[consumed:])
	buf = buf[:rest]
	if want > cap(buf) {
		buf = grow(buf, min(want, 2*cap(buf)))
	}
	return buf
}

// smallLeftover is the most unfinished input a socket keeps in an exactly
// sized copy instead of holding a pooled buffer between reads.
const smallLeftover = 512

// keepInput stores unfinished input on the socket, or returns the buffer to
// the pool when there is none.
func (s *socket) keepInput(w *worker, buf []byte) {
	switch {
	case len(buf) == 0:
		putReadBuffer(buf)
		buf = nil
	case len(buf) <= smallLeftover && cap(buf) == readBufferSize:
		// A partial header or a small frame's start: keep its bytes, not
		// 16 KiB. Clients that write a frame's header and payload apart
		// (gobwas/ws's own wsutil does) take this path on many messages, so
		// both pieces come from pools.
		small := append(getSmallBuffer(), buf...)
		putReadBuffer(buf)
		buf = small
	}
	if buf == nil && w.in.fragOp == 0 {
		w.in = inbound{}
		return
	}
	w.in.buf = buf
	in := getInbound()
	*in = w.in
	s.in = in
	w.in = inbound{}
}

// fail closes a connection that broke the protocol: a close frame with the
// error's code, then FIN, and its remaining input is discarded (RFC 6455
// §7.1.7, "Fail the WebSocket Connection").
func (s *socket) fail(perr *protocolError) {
	s.srv.m.badInput.WithLabelValues(perr.kind).Inc()
	if s.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		s.srv.log.LogAttrs(context.Background(), slog.LevelDebug, "protocol error",
			slog.String("room", s.addr.String()), slog.String("socket", s.id.String()),
			slog.Int("code", perr.code), slog.String("reason", perr.reason))
	}
	s.lingering = true
	s.wmu.Lock()
	s.closeLocked(perr.code, perr.reason, true)
	s.wmu.Unlock()
}

// markPartial tells the janitor since when the socket has held the
// message it has not finished: a turn that finished one and ended part-way
// into the next starts the clock again. Without that watch a client could
// start messages it never finishes and pin their buffers for as long as it
// stays connected; with a clock that only stops on empty input, a client
// streaming messages whose reads never happen to end on a frame boundary
// would be cut off mid-stream.
func (s *socket) markPartial(finished bool) {
	switch since := s.partial.Load(); {
	case s.in != nil && (since == 0 || finished):
		s.partial.Store(time.Now().UnixNano())
	case s.in == nil && since != 0:
		s.partial.Store(0)
	}
}

// finish reports the ended socket to the Router, exactly once, unless the
// room refused it.
func (s *socket) finish(w *worker) {
	if s.in != nil {
		putReadBuffer(s.in.buf)
		putInbound(s.in)
		s.in = nil
	}
	s.wmu.Lock()
	code, reason := s.endCode, s.endReason
	s.wmu.Unlock()
	if !s.refused {
		s.srv.router.Closed(s.addr, s, code, reason)
	}
	s.srv.socketEnded(s.quota)
	s.srv.socketFinished(code)
}

// sink delivers parsed frames for one read turn.
type sink struct {
	ctx      context.Context
	s        *socket
	messages int // finished this turn
}

func (k *sink) message(op ws.OpCode, data []byte) {
	s := k.s
	k.messages++
	if s.closing.Load() {
		return // after a close frame, data is discarded (RFC 6455 §1.4)
	}
	if s.overRate() {
		return
	}
	if s.autoRespond(op, data) {
		return
	}
	err := s.srv.router.Message(k.ctx, s.addr, s, rooms.Frame{Op: rooms.Opcode(op), Data: data})
	if err != nil {
		code, reason := closeFor(err)
		// A busy or draining room is routine and counted by the runtime;
		// anything else is worth a line.
		level := slog.LevelWarn
		if errors.Is(err, rooms.ErrOverloaded) || errors.Is(err, rooms.ErrDraining) {
			level = slog.LevelDebug
		}
		s.srv.log.LogAttrs(k.ctx, level, "message refused",
			slog.String("room", s.addr.String()), slog.String("socket", s.id.String()),
			slog.Int("code", code), slog.Any("err", err))
		s.Close(code, reason)
	}
}

func (k *sink) control(op ws.OpCode, payload []byte) {
	s := k.s
	s.wmu.Lock()
	defer s.wmu.Unlock()
	switch op {
	case ws.OpPing:
		if s.wstate == wsOpen {
			s.sendLocked(ws.OpPong, payload, true)
		}
	case ws.OpClose:
		s.peerCloseLocked(payload)
	}
}
