package gateway

import (
	"context"
	"errors"
	"net/http"

	"github.com/roomgate/roomgate/auth"
	"github.com/roomgate/roomgate/rooms"
)

// Errors the gateway itself refuses a handshake with.
var (
	errBadName      = errors.New("gateway: class or room name is not valid")
	errBadQuery     = errors.New("gateway: query string is not valid")
	errBadHandshake = errors.New("gateway: not a valid WebSocket upgrade")
	errOrigin       = errors.New("gateway: origin not allowed")
	errDraining     = errors.New("gateway: node is draining")
	errUnknownClass = rooms.ErrUnknownClass

	errDuplicateOrigin = errors.New("gateway: more than one Origin header")
	errHeaderTooLarge  = errors.New("gateway: request line and headers over 16 KiB")
)

// publicErrors is the one table that maps errors to the public codes of
// DESIGN §1: the REST and handshake body {"error":{"code":...}}, the HTTP
// status before the upgrade, and the close code after it. kind labels
// roomgate_bad_input_total; empty means the error is not the client's fault.
var publicErrors = []struct {
	err    error
	code   string
	status int
	close  int
	kind   string
}{
	{errBadName, "bad_name", http.StatusBadRequest, closePolicy, "bad_name"},
	{errBadQuery, "bad_query", http.StatusBadRequest, closePolicy, "bad_query"},
	{errBadHandshake, "bad_handshake", http.StatusBadRequest, closeProtocolError, "handshake"},
	{errOrigin, "origin_refused", http.StatusForbidden, 4403, "origin"},
	{auth.ErrMissing, "token_missing", http.StatusUnauthorized, 4401, "token_missing"},
	{auth.ErrInvalid, "token_invalid", http.StatusUnauthorized, 4401, "token_invalid"},
	{auth.ErrExpired, "token_expired", http.StatusUnauthorized, 4401, "token_expired"},
	// "forbidden", the code client.js knows not to retry.
	{errTokenScope, "forbidden", http.StatusForbidden, 4403, "token_scope"},
	{errNotAdmin, "admin_required", http.StatusForbidden, 4403, "not_admin"},
	{errAdminHost, "host_refused", http.StatusForbidden, 4403, "admin_host"},
	{errCrossSite, "cross_site", http.StatusForbidden, 4403, "cross_site"},
	{errUnknownClass, "unknown_class", http.StatusNotFound, 4404, "unknown_class"},
	{errDraining, "draining", http.StatusServiceUnavailable, closeDraining, ""},
	{rooms.ErrRefused, "forbidden", http.StatusForbidden, 4403, ""},
	// A cycle fails each method on its way back, so it is ErrFailed too:
	// the cause goes first. 508 Loop Detected (RFC 5842).
	{rooms.ErrCallCycle, "call_cycle", http.StatusLoopDetected, closeInternal, ""},
	{rooms.ErrFailed, "room_failed", http.StatusInternalServerError, closeInternal, ""},
	{rooms.ErrOverloaded, "overloaded", http.StatusServiceUnavailable, closePolicy, ""},
	{rooms.ErrDraining, "draining", http.StatusServiceUnavailable, closeDraining, ""},
	{rooms.ErrUnavailable, "unavailable", http.StatusServiceUnavailable, closeDraining, ""},
	{rooms.ErrRoomNotFound, "room_not_found", http.StatusNotFound, 4404, ""},
	{rooms.ErrSocketNotFound, "socket_not_found", http.StatusNotFound, 4404, ""},
	{rooms.ErrNoRequestHandler, "no_request_handler", http.StatusNotFound, closeInternal, ""},
	{rooms.ErrBadRequest, "bad_request", http.StatusBadRequest, closePolicy, "bad_request"},
	{rooms.ErrLimit, "limit_exceeded", http.StatusBadRequest, closeInternal, ""},
	{errForbidden, "forbidden", http.StatusForbidden, 4403, "admin_remote"},
	{errNotFound, "not_found", http.StatusNotFound, 4404, ""},
	{errMethod, "method_not_allowed", http.StatusMethodNotAllowed, closePolicy, ""},
	{errBodyTooBig, "too_big", http.StatusRequestEntityTooLarge, closeTooBig, "too_big"},
	{errBadLimit, "bad_request", http.StatusBadRequest, closePolicy, "bad_request"},
	// An id that cannot be parsed names no socket, as the contract's 404
	// says, but unlike an id that merely left it is the client's mistake.
	{errBadSocketID, "socket_not_found", http.StatusNotFound, 4404, "bad_request"},
	// The limits (limits.go); roomgate_limited_total counts them.
	{rooms.ErrRoomFull, "room_full", http.StatusServiceUnavailable, closePolicy, ""},
	{errRateLimited, "rate_limited", http.StatusTooManyRequests, closePolicy, ""},
	{errTooManySockets, "too_many_sockets", http.StatusTooManyRequests, closePolicy, ""},
	{errTooManyRooms, "too_many_rooms", http.StatusTooManyRequests, closePolicy, ""},
	{errNodeFull, "node_full", http.StatusServiceUnavailable, closeDraining, ""},
	{errDuplicateOrigin, "bad_handshake", http.StatusBadRequest, closeProtocolError, "origin"},
	{errHeaderTooLarge, "header_too_large", http.StatusRequestHeaderFieldsTooLarge, closeProtocolError, "handshake"},
	// RPC (rpc.go). A method's own errors (rooms.UserError) bypass the
	// table; a method's failure is ErrFailed above, even when it failed
	// on a nested call's no_such_method or bad argument.
	{rooms.ErrNoSuchMethod, "no_such_method", http.StatusNotFound, closeInternal, "no_such_method"},
	{rooms.ErrBadArgument, "bad_request", http.StatusBadRequest, closePolicy, "rpc_argument"},
	{errMethodScope, "forbidden", http.StatusForbidden, 4403, "rpc_scope"},
	{context.DeadlineExceeded, "timeout", http.StatusGatewayTimeout, closeInternal, ""},
}

// publicError finds err's row; an unknown error is "internal", 500, 1011.
func publicError(err error) (code string, status, closeCode int, kind string) {
	for _, row := range publicErrors {
		if errors.Is(err, row.err) {
			return row.code, row.status, row.close, row.kind
		}
	}
	return "internal", http.StatusInternalServerError, closeInternal, ""
}

// closeFor returns the close code and a short reason for err. A room may
// choose its own with a rooms.CloseError.
func closeFor(err error) (int, string) {
	var ce *rooms.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Reason
	}
	code, _, closeCode, _ := publicError(err)
	return closeCode, code
}
