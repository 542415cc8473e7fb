package rooms

import (
	"slices"
	"testing"
)

// TestMailboxCountsPickTheBusiestSocket checks whom a full mailbox refuses:
// the socket with the most queued messages, unless the sender, counting
// its new message, has as many; and that dropping it takes exactly its
// messages out.
func TestMailboxCountsPickTheBusiestSocket(t *testing.T) {
	msgs := func(ids ...SocketID) []event {
		q := make([]event, 0, len(ids)+1)
		for _, id := range ids {
			q = append(q, event{kind: evMessage, id: id})
		}
		return append(q, event{kind: evClose, id: 9}) // not a message: never counted or dropped
	}
	cases := []struct {
		name   string
		queue  []event
		sender SocketID
		want   SocketID
	}{
		{"a flooder holds most", msgs(1, 1, 1, 2, 1, 3), 2, 1},
		{"the sender holds most", msgs(1, 1, 2), 1, 1},
		{"the sender ties once its message counts", msgs(1, 1, 2), 2, 2},
		{"a sender with nothing queued", msgs(1, 1, 1), 4, 1},
		{"no messages at all", msgs(), 4, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := countMessages(tc.queue)
			got := c.busiest(tc.sender)
			if got != tc.want {
				t.Fatalf("busiest(%d) = %d, want %d", tc.sender, got, tc.want)
			}
			before := len(tc.queue)
			rest, dropped := c.drop(slices.Clone(tc.queue), got)
			for _, ev := range dropped {
				if ev.kind != evMessage || ev.id != got {
					t.Fatalf("dropped %+v", ev)
				}
			}
			for _, ev := range rest {
				if ev.kind == evMessage && ev.id == got {
					t.Fatalf("socket %d still has a message queued", got)
				}
			}
			if len(rest)+len(dropped) != before {
				t.Fatalf("%d left and %d dropped of %d", len(rest), len(dropped), before)
			}
			if c.n[got] != 0 {
				t.Fatalf("socket %d still counted %d", got, c.n[got])
			}
		})
	}
	// After the busiest is dropped, the next busiest is found again.
	c := countMessages(msgs(1, 1, 1, 2, 2, 3))
	_, _ = c.drop(msgs(1, 1, 1, 2, 2, 3), c.busiest(3))
	if got := c.busiest(4); got != 2 {
		t.Fatalf("after dropping socket 1, busiest = %d, want 2", got)
	}
}
