package builtin

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/roomgate/roomgate/rooms"
)

// Chat limits.
const (
	maxChatText    = 4 << 10 // bytes of one message's text
	chatHistory    = 100     // messages in a welcome
	chatSinceMax   = 1000    // messages in a welcome that resumes with ?since=
	chatKeep       = 10000   // messages kept in storage; older ones are deleted
	chatMembersMax = 1000    // members listed in a welcome
)

// Chat is the "chat" class. A client sends {"type":"say","text":"…"}; every
// socket gets {"type":"message","seq":N,"user":{…},"text":"…","ts":MS},
// where seq grows by one per message and is persisted. A new socket gets
// {"type":"welcome","you":{…},"members":[…],"history":[…]} with the last
// 100 messages, or with ?since=SEQ every message after SEQ (up to 1000), so
// a reconnecting client misses nothing. Users joining and leaving (their
// first socket opening, their last closing) are announced with
// {"type":"join","user":{…}} and {"type":"leave","user":{…}}.
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
	o := rooms.ListOptions{Prefix: "msg/", Reverse: true, Limit: chatHistory}
	bad := false
	if s := c.Query().Get("since"); s != "" {
		since, err := strconv.ParseInt(s, 10, 64)
		if err != nil || since < 0 {
			bad = true
		} else {
			o = rooms.ListOptions{Prefix: "msg/", Start: msgKey(since + 1), Limit: chatSinceMax}
		}
	}
	kvs, err := r.Storage().List(ctx, o)
	if err != nil {
		return err
	}
	history := make([]json.RawMessage, len(kvs))
	for i, kv := range kvs {
		if o.Reverse {
			i = len(kvs) - 1 - i
		}
		history[i] = kv.Value
	}
	members, total := users(r, "")
	if err := c.SendJSON(chatWelcome{Type: "welcome", You: c.User(), Members: members, MembersTotal: total, History: history}); err != nil {
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

// OnMessage handles {"type":"say"}.
func (ch *Chat) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	var in struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if code, msg := decode(f, &in); code != "" {
		return refuse(r, c, code, msg)
	}
	switch {
	case in.Type != "say":
		return refuse(r, c, "unknown_type", `the only message type is "say"`)
	case in.Text == nil || strings.TrimSpace(*in.Text) == "":
		return refuse(r, c, "empty_text", "text is required")
	case len(*in.Text) > maxChatText:
		return refuse(r, c, "too_long", fmt.Sprintf("text is limited to %d bytes", maxChatText))
	case !utf8.ValidString(*in.Text):
		return refuse(r, c, "bad_json", "text is not valid UTF-8")
	}
	ch.seq++
	msg, err := json.Marshal(chatMessage{Type: "message", Seq: ch.seq, User: c.User(), Text: *in.Text, TS: time.Now().UnixMilli()})
	if err != nil {
		return err
	}
	s := r.Storage()
	if err := s.Put(msgKey(ch.seq), msg); err != nil {
		return err
	}
	if err := s.Put("seq", strconv.AppendInt(nil, ch.seq, 10)); err != nil {
		return err
	}
	if ch.seq > chatKeep {
		s.Delete(msgKey(ch.seq - chatKeep))
	}
	return r.Broadcast(rooms.Frame{Op: rooms.Text, Data: msg})
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
