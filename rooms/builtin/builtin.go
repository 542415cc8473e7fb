// Package builtin holds Roomgate's built-in room classes, each written
// against the public rooms API exactly as a user's class would be: echo,
// counter, chat and canvas, with the wire protocol of DESIGN §1.
package builtin

import (
	"encoding/json"
	"errors"

	"github.com/roomgate/roomgate/rooms"
)

// Register adds every built-in class to rt.
func Register(rt *rooms.Runtime) {
	rt.Register("echo", func() rooms.Handler { return Echo{} })
	rt.Register("counter", func() rooms.Handler { return new(Counter) })
	rt.Register("chat", func() rooms.Handler { return new(Chat) })
	rt.Register("canvas", func() rooms.Handler { return new(Canvas) })
}

// errorMessage is the reply to bad input; the socket stays open.
type errorMessage struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// refuse answers bad input and counts it; code is also the metric's kind.
func refuse(r *rooms.Room, c *rooms.Conn, code, message string) error {
	r.CountBadInput(code)
	return c.SendJSON(errorMessage{Type: "error", Code: code, Message: message})
}

// decode reads a JSON text message into v, reporting a bad-input code.
func decode(f rooms.Frame, v any) (code, message string) {
	if f.Op != rooms.Text {
		return "bad_json", "messages are JSON text frames"
	}
	if err := json.Unmarshal(f.Data, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return "bad_json", "field " + te.Field + " has the wrong type"
		}
		return "bad_json", "not valid JSON"
	}
	return "", ""
}
