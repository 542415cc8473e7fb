package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// Call calls the room's RPC method, as a Worker calls a method on a
// Durable Object's stub: POST /v1/rooms/{class}/{room}/rpc/{method} with
// args encoded as JSON (nil sends null; pass a json.RawMessage to send
// JSON as it is), and the answer's {"result":…} decoded into reply, which
// must be a pointer (nil discards the result). The call is one event of
// the room: it runs one at a time with the room's other events, and its
// result comes back only once its writes are committed.
//
// An error the method returns comes back as an *Error: a 4xx with the
// code the class chose, or a 500. A method the class does not have is a
// 404 with CodeNoSuchMethod (CodeNotFound from a node older than RPC).
//
// Call is retried only when the call did not reach the room: a 503 or 429
// refusal, or a connection that could not be opened. So a method runs at
// most once per Call, with one exception in a cluster: when the link to
// the room's owner breaks while the call is in flight, the edge answers
// 503 draining though the owner may have run it. Give a method that must
// not run twice an idempotency key in its args, or set MaxAttempts to 1.
func (r *Room) Call(ctx context.Context, method string, args, reply any) error {
	body, err := jsonBody(args)
	if err != nil {
		return fmt.Errorf("client: call %s on %s/%s: %w", method, r.class, r.name, err)
	}
	var out struct {
		Result json.RawMessage `json:"result"`
	}
	rq := request{method: http.MethodPost, path: r.path + "/rpc/" + url.PathEscape(method),
		body: body, contentType: "application/json"}
	if err := r.c.do(ctx, rq, &out); err != nil {
		return err
	}
	if reply == nil || len(out.Result) == 0 {
		return nil
	}
	if err := json.Unmarshal(out.Result, reply); err != nil {
		return fmt.Errorf("client: call %s on %s/%s: decode the result: %w", method, r.class, r.name, err)
	}
	return nil
}
