package builtin

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"github.com/roomgate/roomgate/rooms"
)

// Canvas dimensions and the cursor rate limit per socket.
const (
	canvasSize     = 64
	cursorRate     = 20 // cursor messages per second, sustained
	cursorBurst    = 10
	blankCellColor = "#ffffff"
)

// playerColors are handed out to players by a hash of their user id.
var playerColors = []string{"#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080", "#f032e6", "#9a6324", "#800000", "#000075"}

// Canvas is the "canvas" class: a 64×64 board of colours that players paint
// together, with live cursors. {"type":"paint","x","y","color":"#rrggbb"} is
// persisted and broadcast; {"type":"cursor","x","y"} goes to the other
// players and is never stored (at most 20 a second per socket; more are
// dropped). A new socket gets {"type":"state","board":…,"players":[…]},
// where board[y][x] is a colour.
type Canvas struct {
	board   [canvasSize][canvasSize]string
	cursors map[rooms.SocketID]*bucket
}

type player struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Color string `json:"color"`
}

func playerOf(c *rooms.Conn) player {
	u := c.User()
	h := fnv.New32a()
	h.Write([]byte(u.ID))
	return player{ID: u.ID, Name: u.Name, Color: playerColors[h.Sum32()%uint32(len(playerColors))]}
}

func cellKey(x, y int) string { return fmt.Sprintf("px/%02d/%02d", x, y) }

// OnStart loads the board.
func (cv *Canvas) OnStart(ctx context.Context, r *rooms.Room) error {
	cv.cursors = map[rooms.SocketID]*bucket{}
	for y := range cv.board {
		for x := range cv.board[y] {
			cv.board[y][x] = blankCellColor
		}
	}
	kvs, err := r.Storage().List(ctx, rooms.ListOptions{Prefix: "px/"})
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		var x, y int
		if _, err := fmt.Sscanf(kv.Key, "px/%02d/%02d", &x, &y); err == nil && x < canvasSize && y < canvasSize {
			cv.board[y][x] = string(kv.Value)
		}
	}
	return nil
}

// OnConnect sends the board and the players, and announces the newcomer.
func (cv *Canvas) OnConnect(ctx context.Context, r *rooms.Room, c *rooms.Conn) error {
	players := []player{}
	for _, o := range r.Conns("") {
		players = append(players, playerOf(o))
	}
	err := c.SendJSON(struct {
		Type    string                         `json:"type"`
		Board   [canvasSize][canvasSize]string `json:"board"`
		Players []player                       `json:"players"`
	}{"state", cv.board, players})
	if err != nil {
		return err
	}
	return r.BroadcastJSON(struct {
		Type   string `json:"type"`
		Player player `json:"player"`
	}{"join", playerOf(c)}, c.ID())
}

// OnMessage handles paint and cursor messages.
func (cv *Canvas) OnMessage(ctx context.Context, r *rooms.Room, c *rooms.Conn, f rooms.Frame) error {
	var in struct {
		Type  string   `json:"type"`
		X     *float64 `json:"x"`
		Y     *float64 `json:"y"`
		Color string   `json:"color"`
	}
	if code, msg := decode(f, &in); code != "" {
		return refuse(r, c, code, msg)
	}
	if in.Type != "paint" && in.Type != "cursor" {
		return refuse(r, c, "unknown_type", `message types are "paint" and "cursor"`)
	}
	if in.X == nil || in.Y == nil || math.IsNaN(*in.X) || math.IsNaN(*in.Y) {
		return refuse(r, c, "bad_position", "x and y are required numbers")
	}
	x, y := *in.X, *in.Y
	switch in.Type {
	case "paint":
		if x != math.Trunc(x) || y != math.Trunc(y) || x < 0 || y < 0 || x >= canvasSize || y >= canvasSize {
			return refuse(r, c, "bad_position", fmt.Sprintf("x and y are whole numbers from 0 to %d", canvasSize-1))
		}
		if !validColor(in.Color) {
			return refuse(r, c, "bad_color", `color is "#rrggbb"`)
		}
		cv.board[int(y)][int(x)] = in.Color
		if err := r.Storage().Put(cellKey(int(x), int(y)), []byte(in.Color)); err != nil {
			return err
		}
		return r.BroadcastJSON(struct {
			Type  string     `json:"type"`
			X     int        `json:"x"`
			Y     int        `json:"y"`
			Color string     `json:"color"`
			User  rooms.User `json:"user"`
		}{"paint", int(x), int(y), in.Color, c.User()})
	case "cursor":
		if x < 0 || y < 0 || x > canvasSize || y > canvasSize {
			return refuse(r, c, "bad_position", fmt.Sprintf("x and y are from 0 to %d", canvasSize))
		}
		b := cv.cursors[c.ID()]
		if b == nil {
			b = &bucket{tokens: cursorBurst, last: time.Now()}
			cv.cursors[c.ID()] = b
		}
		if !b.take(time.Now()) {
			r.CountBadInput("cursor_rate") // dropped: cursors are only ever a hint
			return nil
		}
		p := playerOf(c)
		b2, err := json.Marshal(struct {
			Type  string  `json:"type"`
			ID    string  `json:"id"`
			Name  string  `json:"name"`
			Color string  `json:"color"`
			X     float64 `json:"x"`
			Y     float64 `json:"y"`
		}{"cursor", p.ID, p.Name, p.Color, x, y})
		if err != nil {
			return err
		}
		return r.Broadcast(rooms.Frame{Op: rooms.Text, Data: b2}, c.ID())
	}
	return nil
}

// OnClose announces the player's departure.
func (cv *Canvas) OnClose(ctx context.Context, r *rooms.Room, c *rooms.Conn, info rooms.CloseInfo) error {
	delete(cv.cursors, c.ID())
	return r.BroadcastJSON(struct {
		Type   string `json:"type"`
		Player player `json:"player"`
	}{"leave", playerOf(c)})
}

func validColor(s string) bool {
	if len(s) != 7 || s[0] != '#' {
		return false
	}
	for _, c := range s[1:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// bucket is a token bucket: cursorRate tokens a second, up to cursorBurst.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time) bool {
	b.tokens = min(cursorBurst, b.tokens+now.Sub(b.last).Seconds()*cursorRate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
