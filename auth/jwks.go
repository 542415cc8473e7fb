package auth

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// maxJWKSBytes bounds a JWKS response; real ones are a few KiB.
const maxJWKSBytes = 1 << 20

// jwks holds the keys of a JSON Web Key Set. jwkset fetches, parses and
// validates them and keyfunc picks one by kid; the schedule is ours, so
// the one goroutine that fetches belongs to Run, which waits for it, and a
// token with an unknown kid never makes a handshake wait on the network.
type jwks struct {
	o       *Options
	client  *http.Client
	current atomic.Pointer[keySet] // nil until the first fetch succeeds
	kick    chan struct{}          // a token named an unknown kid: fetch soon
}

type keySet struct{ kf keyfunc.Keyfunc }

func newJWKS(o *Options) *jwks {
	var client http.Client
	if o.HTTPClient != nil {
		client = *o.HTTPClient
	} else {
		// Fetches are minutes apart: a kept-alive connection would only
		// leave goroutines behind in the transport.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DisableKeepAlives = true
		client = http.Client{Timeout: 10 * time.Second, Transport: t}
	}
	client.Transport = limitedTransport{cmp.Or(client.Transport, http.DefaultTransport)}
	return &jwks{o: o, client: &client, kick: make(chan struct{}, 1)}
}

// key returns the key for t from the current set. An unknown kid asks Run
// for a fetch, which finds a key the issuer has just started signing with.
func (j *jwks) key(t *jwt.Token) (any, error) {
	ks := j.current.Load()
	if ks == nil {
		j.refreshSoon()
		return nil, errors.New("JWKS keys not fetched yet")
	}
	k, err := ks.kf.Keyfunc(t)
	if errors.Is(err, jwkset.ErrKeyNotFound) {
		j.refreshSoon()
	}
	return k, err
}

func (j *jwks) refreshSoon() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// run fetches at once, then every JWKSRefresh, or when kicked but no
// sooner than JWKSMinRefresh after the last fetch, until ctx ends.
func (j *jwks) run(ctx context.Context) {
	next := time.Now()
	var last time.Time
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		t.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-j.kick:
			if soonest := last.Add(j.o.JWKSMinRefresh); time.Now().Before(soonest) {
				if soonest.Before(next) {
					next = soonest
				}
				continue
			}
		}
		last = time.Now()
		next = last.Add(j.o.JWKSRefresh)
		if err := j.fetch(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			// Keep the keys known so far; the identity provider may be
			// down for a moment. Try again sooner than a full period.
			j.o.Logger.Warn("fetch JWKS", "url", j.o.JWKSURL, "err", err)
			next = last.Add(j.o.JWKSMinRefresh)
		}
	}
}

// fetch replaces the key set with what the URL serves now, so a key the
// issuer withdrew stops verifying.
func (j *jwks) fetch(ctx context.Context) error {
	timeout := j.client.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := jwkset.NewStorageFromHTTP(j.o.JWKSURL, jwkset.HTTPClientStorageOptions{
		Client:      j.client,
		Ctx:         ctx,
		HTTPTimeout: timeout,
		// No RefreshInterval: jwkset would start a goroutine of its own.
	})
	if err != nil {
		return err
	}
	keys, err := st.KeyReadAll(ctx)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return errors.New("the key set has no usable key")
	}
	// keyfunc reads the storage with its own context, which must outlive
	// this fetch: the storage is in memory, so nothing waits on it.
	kf, err := keyfunc.New(keyfunc.Options{Ctx: context.Background(), Storage: st})
	if err != nil {
		return err
	}
	j.current.Store(&keySet{kf: kf})
	return nil
}

// limitedTransport cuts a response body at maxJWKSBytes, so a broken or
// hostile endpoint cannot make a fetch read without end.
type limitedTransport struct{ http.RoundTripper }

func (t limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.RoundTripper.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = limitedBody{io.LimitReader(resp.Body, maxJWKSBytes), resp.Body}
	return resp, nil
}

type limitedBody struct {
	io.Reader
	io.Closer
}
