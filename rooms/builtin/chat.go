package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/roomgate/roomgate/rooms"
)

// Chat limits.
const (
	maxChatText    = 4 << 10   // bytes of one message's text
	chatHistory    = 100       // messages in a welcome, and in a history page
	chatSinceMax   = 1000      // messages in a welcome that resumes with ?since=
	chatPageBytes  = 256 << 10 // bytes of a welcome, all of it, and of a history page's messages
	chatKeep       = 10000     // messages kept in storage; older ones are deleted
	chatMembersMax = 1000      // members listed in a welcome
)

// Chat is the "chat" class. A client sends {"type":"say","text":"…"}; every
// socket gets {"type":"message","seq":N,"user":{…},"text":"…","ts":MS},
// where seq grows by one per message and is persisted. A new socket gets
// {"type":"welcome","you":{…},"members":[…],"history":[…],"more":B} with
// the last 100 messages, or with ?since=SEQ the messages after SEQ (up to
// 1000), so a reconnecting client misses nothing. A welcome is at most
// 256 KiB: when the history asked for does not fit, it carries the newest
// part that does and "more" is true, and the client asks for the older
// part with {"type":"history","before":SEQ[,"after":SEQ]}, answered with
// {"type":"history","messages":[…],"more":B}, as bounded. Users joining and
// leaving (their first socket opening, their last closing) are announced
// with {"type":"join","user":{…}} and {"type":"leave","user":{…}}.
type Chat struct {
	seq     int64
	sockets map[string]int // open sockets per user id
}

type chatMessage struct {
	Type string     `json:"type"`
	Seq  int64      `json:"seq"`
	User rooms.User `json:"user"`
	Text string     `json:"text"`
	TS   int64      `json:"ts"`
}

type chatWelcome struct {
	Type         string            `json:"type"`
	You          rooms.User        `json:"you"`
	Members      []rooms.User      `json:"members"`
	MembersTotal int               `json:"members_total"`
	History      []json.RawMessage `json:"history"`
	More         bool              `json:"more"` // messages asked for are older than history[0] and left out: page them with "history"
}

type chatHistoryPage struct {
	Type     string            `json:"type"`
	Messages []json.RawMessage `json:"messages"`
	More     bool              `json:"more"`
}

type chatPresence struct {
	Type string     `json:"type"`
	User rooms.User `json:"user"`
}

func msgKey(seq int64) string { return fmt.Sprintf("msg/%020d", seq) }

// OnStart loads the last sequence number and counts who is connected: a
// rebuilt instance keeps its sockets.
func (ch *Chat) OnStart(ctx context.Context, r *rooms.Room) error {
	ch.sockets = map[string]int{}
	for _, c := range r.Conns("") {
		ch.sockets[c.User().ID]++
	}
	v, err := r.Storage().Get(ctx, "seq")
	if err != nil || v == nil {
		return err
	}
	ch.seq, err = strconv.ParseInt(string(v), 10, 64)
	return err
}

// OnConnect welcomes the socket and announces its user.
func (ch *Chat) OnConnect(ctx context.Context, r *rooms.Room, c *rooms.Conn) error {
	// ?since=SEQ asks for the messages after SEQ; one past the last message
	// (math.MaxInt64 included) asks for none. Anything else is refused with
	// an error message after a welcome with the latest messages.
	after, count, bad := int64(0), chatHistory, false
	if s := c.Query().Get("since"); s != "" {
		since, err := strconv.ParseInt(s, 10, 64)
		if err != nil || since < 0 {
			bad = true
		} else {
			after, count = since, chatSinceMax
		}
	}
	members, total := users(r, "")
	w := chatWelcome{Type: "welcome", You: c.User(), Members: members, MembersTotal: total, History: []json.RawMessage{}}
	bare, err := json.Marshal(w)
	if err != nil {
		return err
	}
	w.History, w.More, err = ch.page(ctx, r.Storage(), after, math.MaxInt64, count, chatPageBytes-len(bare))
	if err != nil {
		return err
	}
	if err := c.SendJSON(w); err != nil {
		return err
	}
	if bad {
		refuse(r, c, "bad_since", "since must be a message's seq")
	}
	ch.sockets[c.User().ID]++
	if ch.sockets[c.User().ID] == 1 {
		return r.BroadcastJSON(chatPresence{Type: "join", User: c.User()}, c.ID())
	}
	return nil
}

// page returns the newest stored messages with after < seq < before,
// oldest first, at most count of them and budget bytes of JSON, and
// whether older ones in that range were left out. It reads the messages
// newest first, a few at a time, and stops at the bound: a full room's
// history is never read whole for one page.
func (ch *Chat) page(ctx context.Context, s *rooms.Storage, after, before int64, count, budget int) ([]json.RawMessage, bool, error) {
	msgs := []json.RawMessage{}
	after, before = max(after, 0), min(before, ch.seq+1)
	if after >= ch.seq || after+1 >= before {
		return msgs, false, nil
	}
	o := rooms.ListOptions{Prefix: "msg/", Start: msgKey(after + 1), End: msgKey(before), Reverse: true}
	for {
		o.Limit = min(count-len(msgs)+1, 64) // one more than fits tells whether there are more
		kvs, err := s.List(ctx, o)
		if err != nil {
			return nil, false, err
		}
		for _, kv := range kvs {
			if len(msgs) == count || len(kv.Value)+1 > budget {
				slices.Reverse(msgs)
				return msgs, true, nil
			}
			msgs = append(msgs, kv.Value)
			budget -= len(kv.Value) + 1 // and its comma
		}
		if len(kvs) < o.Limit {
			slices.Reverse(msgs)
			return msgs, false, nil
		}
		o.End = kvs[len(kvs)-1].Key
	}
}

// OnMessage handles {"type":"say"} and {"type":"history"}.
func (ch *Chat) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	var in struct {
		Type   string  `json:"type"`
		Text   *string `json:"text"`
		Before *int64  `json:"before"`
		After  *int64  `json:"after"`
	}
	if code, msg := decode(f, &in); code != "" {
		return refuse(r, c, code, msg)
	}
	if in.Type == "history" {
		return ch.history(ctx, r, c, in.Before, in.After)
	}
	switch {
	case in.Type != "say":
		return refuse(r, c, "unknown_type", `the message types are "say" and "history"`)
	case in.Text == nil || strings.TrimSpace(*in.Text) == "":
		return refuse(r, c, "empty_text", "text is required")
	case len(*in.Text) > maxChatText:
		return refuse(r, c, "too_long", fmt.Sprintf("text is limited to %d bytes", maxChatText))
	case !utf8.ValidString(*in.Text):
		return refuse(r, c, "bad_json", "text is not valid UTF-8")
	}
	seq := ch.seq + 1
	msg, err := json.Marshal(chatMessage{Type: "message", Seq: seq, User: c.User(), Text: *in.Text, TS: time.Now().UnixMilli()})
	if err != nil {
		return err
	}
	s := r.Storage()
	err = s.PutMany(map[string][]byte{msgKey(seq): msg, "seq": strconv.AppendInt(nil, seq, 10)})
	if errors.Is(err, rooms.ErrLimit) {
		// The room is at its storage quota: the message is refused, and
		// the socket stays open. Nothing was written.
		return refuse(r, c, "storage_full", "the room's storage is full")
	}
	if err != nil {
		return err
	}
	ch.seq = seq
	if seq > chatKeep {
		s.Delete(msgKey(seq - chatKeep))
	}
	return r.Broadcast(rooms.Frame{Op: rooms.Text, Data: msg})
}

// history answers {"type":"history","before":SEQ,"after":SEQ}: a page of
// the messages between the two, newest first as a welcome's history is,
// for a client paging back from a welcome whose "more" was true.
func (ch *Chat) history(ctx context.Context, r *rooms.Room, c *rooms.Conn, before, after *int64) error {
	if before == nil || *before < 1 || after != nil && *after < 0 {
		return refuse(r, c, "bad_history", "history takes before, a message's seq, and optionally after, a seq below it")
	}
	from := int64(0)
	if after != nil {
		from = *after
	}
	p := chatHistoryPage{Type: "history"}
	var err error
	p.Messages, p.More, err = ch.page(ctx, r.Storage(), from, *before, chatHistory, chatPageBytes)
	if err != nil {
		return err
	}
	return c.SendJSON(p)
}

// OnClose announces a user whose last socket left.
func (ch *Chat) OnClose(ctx context.Context, r *rooms.Room, c *rooms.Conn, info rooms.CloseInfo) error {
	id := c.User().ID
	if ch.sockets[id]--; ch.sockets[id] > 0 {
		return nil
	}
	delete(ch.sockets, id)
	return r.BroadcastJSON(chatPresence{Type: "leave", User: c.User()})
}

// users lists the distinct users of the room's sockets, at most
// chatMembersMax, and how many there are.
func users(r *rooms.Room, tag string) ([]rooms.User, int) {
	seen := map[string]bool{}
	out := []rooms.User{}
	for _, c := range r.Conns(tag) {
		if u := c.User(); !seen[u.ID] {
			seen[u.ID] = true
			if len(out) < chatMembersMax {
				out = append(out, u)
			}
		}
	}
	return out, len(seen)
}
