// Admission before the upgrade: a full room, and whether a socket would
// create its room.

package rooms

import (
	"context"
)

// Admitter is a Router that decides before the upgrade whether a socket
// may open, so its refusal becomes an HTTP status instead of a close
// code, and says whether the socket would create its room, for a limit
// on room creation per client. The gateway asks it last in admission,
// from the handshake's goroutine; Admit may read storage.
type Admitter interface {
	Admit(ctx context.Context, a Addr, askCreates bool) (creates bool, err error)
}

// Admit implements Admitter. A socket for a room running here that already
// has MaxSockets is refused with ErrRoomFull (503 before the upgrade; a
// room elsewhere or asleep refuses it at Connect, with close 1008). When
// askCreates, it reports whether the socket would create the room: no
// instance on this node, no known owner elsewhere, nothing stored. Sockets
// for rooms that exist are never creations, so reconnecting clients and
// busy rooms are never limited; when storage cannot say whether a room
// exists, the socket is not counted as one (Connect fails it if the store
// is down).
func (rt *Runtime) Admit(ctx context.Context, a Addr, askCreates bool) (creates bool, err error) {
	if rt.Full(a) {
		return false, ErrRoomFull
	}
	if !askCreates || rt.active(a) != nil || rt.cl.cachedOwner(a) != "" {
		return false, nil
	}
	_, stored, err := rt.store.Stat(ctx, a.storageRoom())
	return err == nil && !stored, nil
}
