package client

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Error is a call the node (or a proxy in front of it) refused: an HTTP
// status of 400 or more. Roomgate answers {"error":{"code","message"}},
// whose fields Code and Message hold; an answer in another shape (a
// proxy's page) leaves Code empty and puts the start of its body in
// Message. Find it with errors.As; the client wraps it with the call.
type Error struct {
	Status     int           // the HTTP status, such as 404
	Code       string        // the stable code, such as CodeRoomNotFound; compare this, not Message
	Message    string        // for people; may change between versions
	RetryAfter time.Duration // the node's Retry-After (429, some 503s), 0 when it sent none
}

// Error returns "404 room_not_found: message".
func (e *Error) Error() string {
	code := e.Code
	if code == "" {
		code = strings.ToLower(strings.ReplaceAll(http.StatusText(e.Status), " ", "_"))
	}
	s := strconv.Itoa(e.Status)
	if code != "" {
		s += " " + code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// The codes of DESIGN §1 and the README's REST section that a call of this
// package may meet. An RPC method may answer codes of its own.
const (
	CodeBadName          = "bad_name"           // 400: a class or room name that is not valid
	CodeBadRequest       = "bad_request"        // 400: a bad limit, cursor or body
	CodeTokenMissing     = "token_missing"      // 401: no token, and the node has a key
	CodeTokenInvalid     = "token_invalid"      // 401: a token the node cannot verify
	CodeTokenExpired     = "token_expired"      // 401: a token past its exp
	CodeForbidden        = "forbidden"          // 403: the token does not cover the room, or (dev mode) a remote client
	CodeAdminRequired    = "admin_required"     // 403: the admin API with a token that is not an admin's
	CodeHostRefused      = "host_refused"       // 403: dev mode, addressed by a name that is not local
	CodeCrossSite        = "cross_site"         // 403: dev mode, a request a page of another site could send
	CodeUnknownClass     = "unknown_class"      // 404: no class of that name
	CodeRoomNotFound     = "room_not_found"     // 404: the room has neither storage nor sockets
	CodeSocketNotFound   = "socket_not_found"   // 404: no socket of that id in the room (Kick)
	CodeNoSuchMethod     = "no_such_method"     // 404: the class has no RPC method of that name
	CodeNoRequestHandler = "no_request_handler" // 404: the class has no OnRequest
	CodeNotFound         = "not_found"          // 404: no such route: a node older than the call
	CodeTooBig           = "too_big"            // 413: a body over the node's -max-message-bytes
	CodeLimitExceeded    = "limit_exceeded"     // 400: a room limit (storage quota, attachment size)
	CodeRateLimited      = "rate_limited"       // 429: too many calls from this client; see RetryAfter
	CodeDraining         = "draining"           // 503: the node is shutting down, or the room just moved
	CodeOverloaded       = "overloaded"         // 503: the room has too many queued events
	CodeUnavailable      = "unavailable"        // 503: in a cluster, Redis or the room's owner cannot be reached
	CodeRoomFull         = "room_full"          // 503: the room has -max-sockets-per-room sockets
	CodeRoomFailed       = "room_failed"        // 500: the room's handler or its storage failed
	CodeInternal         = "internal"           // 500: anything else
)

// CodeOf returns the code of the *Error in err's chain, or "" when there
// is none (a transport error, a context's end).
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// IsNotFound reports whether err is a 404 from the node, whatever its
// code: a room, socket, class, method or route that does not exist.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// maxErrorBody bounds what is read of a refusal: Roomgate's are a few
// hundred bytes, and a proxy's error page is not worth more.
const maxErrorBody = 64 << 10

// readError turns a refusal into an *Error and closes its body.
func readError(resp *http.Response) *Error {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody)) // so the connection may be reused
	e := parseError(resp.StatusCode, b)
	e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	return e
}

// parseError reads Roomgate's error body; anything else becomes the
// message, cut short.
func parseError(status int, body []byte) *Error {
	var v struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &v) == nil && v.Error != nil && v.Error.Code != "" {
		return &Error{Status: status, Code: v.Error.Code, Message: v.Error.Message}
	}
	msg := strings.ToValidUTF8(strings.TrimSpace(string(body)), "\uFFFD")
	if len(msg) > 200 {
		cut := 200
		for !utf8.RuneStart(msg[cut]) { // do not cut a character in two
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return &Error{Status: status, Message: msg}
}

// maxRetryAfter (seconds, a day) keeps a silly header from overflowing a
// Duration; anything near it is not waited for anyway.
const maxRetryAfter = 24 * 60 * 60

// parseRetryAfter reads a Retry-After header: seconds, or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(min(n, maxRetryAfter)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter*time.Second)
	}
	return 0
}
