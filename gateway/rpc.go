package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/roomgate/roomgate/auth"
	"github.com/roomgate/roomgate/rooms"
)

// errMethodScope refuses a token whose rpc claim does not list the method.
var errMethodScope = errors.New("gateway: the token's rpc claim does not list this method")

// rpcAccess admits an RPC call (POST /v1/rooms/{class}/{room}/rpc/{method}):
// whatever admits an admin call (an admin token; in dev mode, a local
// request that no page of another site could have sent), or a token whose
// rooms cover the room and whose rpc claim, when it has one, lists the
// method or "*". A backend calls with an admin token or one scoped to its
// rooms; a page's token may call its room's methods unless minted with
// "rpc": [] (docs/security.md).
func (s *Server) rpcAccess(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.admitRPC(r); err != nil {
			s.refuseREST(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) admitRPC(r *http.Request) error {
	if s.o.Auth == nil {
		return s.devAdmin(r)
	}
	c, err := s.restToken(r)
	if err != nil || c.Admin {
		return err
	}
	class, room, method := chi.URLParam(r, "class"), chi.URLParam(r, "room"), chi.URLParam(r, "method")
	if !c.Covers(class, room) {
		return fmt.Errorf("%w: %s/%s", errTokenScope, class, room)
	}
	methods, err := rpcClaim(c.Extra)
	if err != nil {
		return err
	}
	if methods != nil && !slices.Contains(methods, method) && !slices.Contains(methods, "*") {
		return fmt.Errorf("%w: %s", errMethodScope, method)
	}
	return nil
}

// rpcClaim returns the token's rpc claim: the methods it may call, "*"
// for all; nil when it has none. Like the claims Roomgate reads itself, one
// of the wrong type makes the token invalid rather than absent, for RPC.
// It is not a claim of package auth's: it stays among the extra claims
// that a room class sees.
func rpcClaim(extra []byte) ([]string, error) {
	if len(extra) == 0 {
		return nil, nil
	}
	var claims struct {
		RPC json.RawMessage `json:"rpc"`
	}
	if err := json.Unmarshal(extra, &claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", auth.ErrInvalid, err) // fail closed
	}
	if claims.RPC == nil {
		return nil, nil
	}
	methods := []string{}
	if err := json.Unmarshal(claims.RPC, &methods); err != nil || methods == nil {
		return nil, fmt.Errorf(`%w: claim "rpc" must be a list of method names`, auth.ErrInvalid)
	}
	return methods, nil
}

// callRoom calls the method with the body as its JSON argument (an empty
// body is null) and answers {"result":…} once the call's writes are
// committed. A rooms.UserError the method answered is its own status and
// {"error":{"code","message"}}; any other error goes through the table.
func (s *Server) callRoom(w http.ResponseWriter, r *http.Request) {
	body, err := s.readBody(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	res, err := s.o.Admin.CallJSON(r.Context(), addrOf(r), chi.URLParam(r, "method"), body)
	var ue *rooms.UserError
	switch {
	case errors.As(err, &ue):
		writeUserError(w, ue)
		return
	case err != nil:
		s.fail(w, err)
		return
	case len(res) == 0:
		res = []byte("null")
	}
	b := make([]byte, 0, len(res)+12)
	b = append(b, `{"result":`...)
	b = append(b, res...)
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// writeUserError answers with the class's own error: not the client's
// bad input for Roomgate, so not counted.
func writeUserError(w http.ResponseWriter, ue *rooms.UserError) {
	status := ue.Status
	if status < 400 || status > 499 {
		status = http.StatusBadRequest // rooms fills it in; a 5xx would read as Roomgate's
	}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Code, body.Error.Message = ue.Code, ue.Message
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	if ue.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ue.RetryAfter.Seconds()))))
	}
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
