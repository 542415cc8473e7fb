package hibernation

// Unsaved lists the sockets of one room whose membership record changed
// since the last save; T is the runtime's socket. Records are needed only
// once the room leaves memory, so they are saved just before (Rooms.Save)
// and on drain, not with every connect: a burst of connects costs nothing
// in storage. Only the room's goroutine, or whoever holds the room parked,
// may use it.
type Unsaved[T any] []T

// Add appends x, whose record just changed and which is not on the list
// yet (the runtime flags its sockets to know). A busy room is saved only
// when it falls idle, so without compaction its list would keep every
// socket that ever joined, and their attachments with them: once the list
// reaches twice the room's members (plus 64), Add first drops the entries
// due says need no save any more (they left, or were saved). The list stays
// within a few times the room's size, at a constant cost per Add on
// average.
func (u *Unsaved[T]) Add(x T, members int, due func(T) bool) {
	if len(*u) >= 2*members+64 {
		kept := (*u)[:0]
		for _, c := range *u {
			if due(c) {
				kept = append(kept, c)
			}
		}
		clear((*u)[len(kept):])
		*u = kept
	}
	*u = append(*u, x)
}

// Reset empties the list once its records are saved.
func (u *Unsaved[T]) Reset() {
	clear(*u)
	*u = (*u)[:0]
	if cap(*u) > 256 {
		*u = nil // a burst of connects is over: do not keep its array
	}
}
