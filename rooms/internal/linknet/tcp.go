package linknet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
)

// The TCP handshake: an HTTP/1.1 upgrade at Path to Protocol, each side's
// hello in these headers.
const (
	Protocol          = "roomgate-link/1"
	HeaderNode        = "Roomgate-Node"
	HeaderIncarnation = "Roomgate-Incarnation"
	HeaderSecret      = "Roomgate-Cluster-Secret"
)

// TCP is the production transport: a TCP connection to the node's HTTP
// listener, upgraded at Path. Links arrive through Handler, mounted on
// that listener.
type TCP struct{}

// Dial implements Transport.
func (TCP) Dial(ctx context.Context, node, address string, self Hello) (net.Conn, Hello, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, Hello{}, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+address+Path, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", Protocol)
	req.Header.Set(HeaderNode, self.Node)
	req.Header.Set(HeaderIncarnation, strconv.FormatUint(self.Incarnation, 10))
	if self.Secret != "" {
		req.Header.Set(HeaderSecret, self.Secret)
	}
	if err := req.Write(c); err != nil {
		c.Close()
		return nil, Hello{}, err
	}
	br := bufio.NewReaderSize(c, 64<<10)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		c.Close()
		return nil, Hello{}, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, Hello{}, refused(address, resp.Status)
	}
	if got := resp.Header.Get(HeaderNode); got != node {
		c.Close()
		return nil, Hello{}, wrongNode(address, got, node)
	}
	inc, err := strconv.ParseUint(resp.Header.Get(HeaderIncarnation), 10, 64)
	if err != nil {
		c.Close()
		return nil, Hello{}, fmt.Errorf("link to %s: %w", address, ErrNoIncarnation)
	}
	c.SetDeadline(time.Time{})
	return &bufConn{Conn: c, r: br}, Hello{Node: node, Incarnation: inc}, nil
}

// Listen implements Transport: it does nothing, for TCP links arrive
// through Handler on the node's own listener, which the gateway owns.
func (TCP) Listen(Acceptor) func() { return func() {} }

// Handler accepts TCP links for a; mount it at Path.
func Handler(a Acceptor) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := Hello{Node: r.Header.Get(HeaderNode), Secret: r.Header.Get(HeaderSecret)}
		inc, err := strconv.ParseUint(r.Header.Get(HeaderIncarnation), 10, 64)
		if err != nil || r.Header.Get("Upgrade") != Protocol {
			peer.Node = "" // not a link's hello: Admit refuses it, after the secret
		}
		peer.Incarnation = inc
		self, err := a.Admit(r.Context(), peer, r.RemoteAddr)
		if err != nil {
			var rf *Refusal
			if !errors.As(err, &rf) {
				rf = &Refusal{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
			}
			http.Error(w, fmt.Sprintf(`{"error":{"code":%q,"message":%q}}`, rf.Code, rf.Message), rf.Status)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			http.Error(w, "cannot hijack", http.StatusInternalServerError)
			return
		}
		c, brw, err := hj.Hijack()
		if err != nil {
			return
		}
		c.SetDeadline(time.Time{}) // the HTTP server's timeouts are not the link's
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n%s: %d\r\n\r\n",
			Protocol, HeaderNode, self.Node, HeaderIncarnation, self.Incarnation)
		if err := brw.Flush(); err != nil {
			c.Close()
			return
		}
		peer.Secret = ""
		a.Accept(&bufConn{Conn: c, r: brw.Reader}, peer)
	})
}
