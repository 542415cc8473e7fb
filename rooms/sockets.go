package rooms

import "time"

// Sockets finds this node's open sockets by id. The gateway owns them
// (DESIGN §2) and implements it; a room that wakes has only its members'
// ids from storage and finds their sockets through it.
type Sockets interface {
	// Socket returns the open socket with id, or nil.
	Socket(id SocketID) Socket
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
