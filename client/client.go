package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Options configures a Client. A zero field means its default.
type Options struct {
	// Token is sent as "Authorization: Bearer <Token>" on every call: an
	// admin token (roomgate token -admin) for the admin API, a token whose
	// rooms cover the room for RPC. Default: none, which only a node in
	// dev mode answers, and only from its own machine.
	Token string
	// TokenFunc, when set, is called before every attempt for the token to
	// send, so a backend can hand out short-lived tokens it mints or
	// caches; its error fails the call. Set Token or TokenFunc, not both.
	TokenFunc func(ctx context.Context) (string, error)
	// HTTPClient makes the requests. Default: a client on
	// http.DefaultTransport with no timeout of its own: bound each call
	// with its ctx.
	HTTPClient *http.Client
	// MaxAttempts is how many times a call is tried, the first included;
	// 1 turns retries off. Default 5.
	MaxAttempts int
	// MinBackoff is the wait before the first retry, doubled for each
	// later one, with jitter. Default 100ms.
	MinBackoff time.Duration
	// MaxBackoff caps the wait between two tries; a Retry-After longer
	// than it is not waited for (the call fails with an Error carrying
	// it). Default 2s.
	MaxBackoff time.Duration
}

// Client calls one Roomgate node (or a load balancer in front of a
// cluster: every node serves the whole API). It is safe for concurrent use
// by any number of goroutines; make one and share it.
type Client struct {
	base string // escaped, without a trailing slash
	o    Options
}

// userAgent names the client in the node's logs and in proxies'.
const userAgent = "roomgate-go-client"

// New returns a Client for the node at baseURL, such as
// "http://localhost:8080" or "https://rooms.example.com/roomgate" (a path
// is kept as a prefix). It starts nothing and sends nothing.
func New(baseURL string, o Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want http:// or https:// and a host", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("client: base URL %q: no query, fragment or user info", baseURL)
	}
	switch {
	case o.Token != "" && o.TokenFunc != nil:
		return nil, errors.New("client: set Token or TokenFunc, not both")
	case o.MaxAttempts < 0 || o.MinBackoff < 0 || o.MaxBackoff < 0:
		return nil, errors.New("client: negative MaxAttempts, MinBackoff or MaxBackoff")
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 5
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 2 * time.Second
	}
	if o.MinBackoff > o.MaxBackoff {
		return nil, fmt.Errorf("client: MinBackoff %v is over MaxBackoff %v", o.MinBackoff, o.MaxBackoff)
	}
	return &Client{base: strings.TrimSuffix(u.String(), "/"), o: o}, nil
}

// request is one REST call, kept whole so that every attempt sends it anew.
type request struct {
	method      string
	path        string // escaped, under the base URL: "/v1/rooms/chat/lobby"
	query       url.Values
	body        []byte
	contentType string
	// idempotent says the call may be sent again after it may have
	// reached the node (a connection reset, a 502 or 504 from a proxy):
	// doing it twice does what doing it once does.
	idempotent bool
}

// do runs rq, with retries (retry.go), and decodes a 2xx JSON answer into
// out when out is not nil. A refusal is an *Error, wrapped with the call.
func (c *Client) do(ctx context.Context, rq request, out any) error {
	var last error
	for attempt := 1; ; attempt++ {
		resp, err := c.send(ctx, rq)
		if err == nil && resp.StatusCode < 300 {
			return decode(resp, out, rq)
		}
		var wait time.Duration
		var again bool
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("client: %s %s: %w", rq.method, rq.path, err)
			}
			last = fmt.Errorf("client: %s %s: %w", rq.method, rq.path, err)
			again = retryableTransport(rq, err)
		} else {
			e := readError(resp)
			last = fmt.Errorf("client: %s %s: %w", rq.method, rq.path, e)
			again = retryableStatus(rq, e.Status)
			wait = e.RetryAfter
		}
		if !again || attempt >= c.o.MaxAttempts {
			return last
		}
		if err := c.pause(ctx, attempt, wait); err != nil {
			return fmt.Errorf("%w (not retried: %w)", last, err)
		}
	}
}

// send makes one attempt.
func (c *Client) send(ctx context.Context, rq request) (*http.Response, error) {
	// rq.path is escaped already, and joined as a string: url.JoinPath
	// would clean a room named ".." away.
	u := c.base + rq.path
	if len(rq.query) > 0 {
		u += "?" + rq.query.Encode()
	}
	var body io.Reader
	if rq.body != nil {
		body = bytes.NewReader(rq.body)
	}
	req, err := http.NewRequestWithContext(ctx, rq.method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if rq.contentType != "" {
		req.Header.Set("Content-Type", rq.contentType)
	}
	token := c.o.Token
	if c.o.TokenFunc != nil {
		if token, err = c.o.TokenFunc(ctx); err != nil {
			return nil, &tokenError{err}
		}
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return c.o.HTTPClient.Do(req)
}

// tokenError is TokenFunc's failure: nothing was sent, and nothing will be
// sent until the function answers, so it is not retried.
type tokenError struct{ err error }

func (e *tokenError) Error() string { return "token: " + e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// decode reads a successful answer into out, and always closes the body
// so the connection can be reused.
func decode(resp *http.Response, out any, rq request) error {
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: %s %s: decode the answer: %w", rq.method, rq.path, err)
	}
	io.Copy(io.Discard, resp.Body)
	return nil
}

// jsonBody encodes v as a request body.
func jsonBody(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("client: encode the request: %w", err)
	}
	return b, nil
}
