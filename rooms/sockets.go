package rooms

import (
	"sync"
	"sync/atomic"
	"time"
)

// socketRegistry finds this node's open sockets by id. A room that wakes
// has only its members' ids from storage; the registry gives it their
// sockets back. It is sharded like the room map so connects on many cores
// do not queue on one lock.
type socketRegistry struct {
	shards [64]struct {
		mu sync.Mutex
		m  map[SocketID]Socket
	}
	count atomic.Int64
}

func (r *socketRegistry) init() {
	for i := range r.shards {
		r.shards[i].m = make(map[SocketID]Socket)
	}
}

func (r *socketRegistry) add(s Socket) {
	sh := &r.shards[s.ID()%SocketID(len(r.shards))]
	sh.mu.Lock()
	if _, dup := sh.m[s.ID()]; !dup {
		r.count.Add(1)
	}
	sh.m[s.ID()] = s
	sh.mu.Unlock()
}

// remove forgets id, only if it is still s when s is not nil.
func (r *socketRegistry) remove(id SocketID, s Socket) {
	sh := &r.shards[id%SocketID(len(r.shards))]
	sh.mu.Lock()
	if cur, ok := sh.m[id]; ok && (s == nil || cur == s) {
		delete(sh.m, id)
		r.count.Add(-1)
	}
	sh.mu.Unlock()
}

func (r *socketRegistry) lookup(id SocketID) Socket {
	sh := &r.shards[id%SocketID(len(r.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[id]
}

// lostSocket stands for a member whose socket no longer exists: the node
// that held it restarted or died. The room sees it once more, in OnClose
// with 1006, and everything sent to it goes nowhere.
type lostSocket SocketID

func (s lostSocket) ID() SocketID                  { return SocketID(s) }
func (lostSocket) Send(Frame) error                { return ErrClosed }
func (lostSocket) Close(int, string)               {}
func (lostSocket) SetAutoResponse(*AutoResponse)   {}
func (lostSocket) LastAutoResponse() (t time.Time) { return t }
