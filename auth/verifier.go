package auth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Errors Verify returns, each wrapping the reason. The gateway answers all
// three with 401 at the handshake; ErrExpired alone tells a client that a
// fresh token of the same kind will do.
var (
	ErrMissing = errors.New("auth: no token")
	ErrInvalid = errors.New("auth: token is not valid")
	ErrExpired = errors.New("auth: token has expired")
)

// MaxTokenBytes bounds a token Verify parses: a real one is a few hundred
// bytes, and a huge one would only make the handshake decode it.
const MaxTokenBytes = 8 << 10

// Options configure a Verifier. At least one of Secret, PublicKeyPEM and
// JWKSURL is required; several may be set at once, e.g. while moving from
// a secret to a key pair. A zero field means its default.
type Options struct {
	Secret         []byte        // HS256/384/512 key, at least MinSecretBytes
	PublicKeyPEM   []byte        // an RSA (2048 bits or more), ECDSA or Ed25519 public key or certificate, PEM
	JWKSURL        string        // a JSON Web Key Set, fetched by Run; https, or http to a loopback host
	Issuer         string        // when set, iss must equal it
	Audience       string        // when set, aud must contain it
	Leeway         time.Duration // clock skew allowed on exp, nbf and iat; default 5s
	JWKSRefresh    time.Duration // how often Run fetches the JWKS again; default 10m
	JWKSMinRefresh time.Duration // least time between fetches a token with an unknown kid asks for; default 30s
	HTTPClient     *http.Client  // fetches the JWKS; default: a 10s timeout, no keep-alive
	Logger         *slog.Logger  // default: discards
}

// OptionError is a bad Options field; Field is its name, e.g. "Secret".
type OptionError struct {
	Field string
	Err   error
}

func (e *OptionError) Error() string { return "auth: " + e.Field + ": " + e.Err.Error() }
func (e *OptionError) Unwrap() error { return e.Err }

func (o *Options) init() error {
	if o.Secret == nil && o.PublicKeyPEM == nil && o.JWKSURL == "" {
		return &OptionError{"Secret", errors.New("a secret, a public key or a JWKS URL is required")}
	}
	if o.Secret != nil && len(o.Secret) < MinSecretBytes {
		return &OptionError{"Secret", fmt.Errorf("%d bytes is too short to resist guessing: at least %d", len(o.Secret), MinSecretBytes)}
	}
	if o.JWKSURL != "" {
		if err := checkJWKSURL(o.JWKSURL); err != nil {
			return &OptionError{"JWKSURL", err}
		}
	}
	if o.Leeway == 0 {
		o.Leeway = 5 * time.Second
	}
	if o.JWKSRefresh == 0 {
		o.JWKSRefresh = 10 * time.Minute
	}
	if o.JWKSMinRefresh == 0 {
		o.JWKSMinRefresh = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Leeway < 0 || o.JWKSRefresh < 0 || o.JWKSMinRefresh < 0 {
		return &OptionError{"Leeway", errors.New("durations must not be negative")}
	}
	return nil
}

// checkJWKSURL allows plain http only to this machine: keys fetched over
// the network in clear could be replaced on the way, and whoever replaces
// them mints any token.
func checkJWKSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	switch {
	case u.Scheme == "https" && u.Host != "":
		return nil
	case u.Scheme == "http" && u.Host != "":
		if ip := net.ParseIP(u.Hostname()); u.Hostname() == "localhost" || ip != nil && ip.IsLoopback() {
			return nil
		}
		return errors.New("must be https (http only to a loopback host): keys fetched in clear can be replaced on the way")
	}
	return errors.New("must be an https:// URL")
}

// Verifier checks tokens. Create it with New.
type Verifier struct {
	o       Options
	parser  *jwt.Parser
	pub     crypto.PublicKey
	methods []string // pub's algorithms
	jwks    *jwks    // nil without a JWKS URL
}

// New checks o and builds a Verifier. It starts nothing and fetches
// nothing; with a JWKS URL, Run does.
func New(o Options) (*Verifier, error) {
	if err := o.init(); err != nil {
		return nil, err
	}
	v := &Verifier{o: o}
	var valid []string
	if o.Secret != nil {
		valid = append(valid, hmacMethods...)
	}
	if o.PublicKeyPEM != nil {
		key, methods, err := ParsePublicKeyPEM(o.PublicKeyPEM)
		if err != nil {
			return nil, &OptionError{"PublicKeyPEM", err}
		}
		v.pub, v.methods = key, methods
		valid = append(valid, methods...)
	}
	if o.JWKSURL != "" {
		v.jwks = newJWKS(&v.o)
		valid = append(valid, jwksMethods...)
	}
	slices.Sort(valid)
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(slices.Compact(valid)),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(o.Leeway),
	}
	if o.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		opts = append(opts, jwt.WithAudience(o.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Leeway is the clock skew allowed: a token is honoured until ExpiresAt
// plus Leeway, and a socket whose token expired is closed then.
func (v *Verifier) Leeway() time.Duration { return v.o.Leeway }

// Verify checks token and returns its claims. The error wraps ErrMissing
// for an empty token, ErrExpired for one whose exp has passed (and that
// is otherwise good), and ErrInvalid for any other fault: a bad signature,
// an algorithm its key does not allow, nbf or iat in the future, the wrong
// iss or aud, no sub or exp, malformed claims. Its message names the fault
// in a fixed phrase, never the token's content.
func (v *Verifier) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, ErrMissing
	}
	if len(token) > MaxTokenBytes {
		return Claims{}, &tokenError{ErrInvalid, fmt.Sprintf("longer than %d bytes", MaxTokenBytes), nil}
	}
	var p payload
	if _, err := v.parser.ParseWithClaims(token, &p, v.key); err != nil {
		return Claims{}, classify(err)
	}
	if p.c.Subject == "" {
		return Claims{}, &tokenError{ErrInvalid, "no sub claim", nil}
	}
	return p.c, nil
}

// key finds the key that checks t. Each source is asked only for the
// algorithms its key type allows, so no token reaches a key of another
// kind; the jwt package checks the key's type once more.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if slices.Contains(hmacMethods, alg) {
		return v.o.Secret, nil // in the valid methods only when a secret is set
	}
	_, hasKID := t.Header["kid"]
	switch {
	case v.jwks != nil && (hasKID || v.pub == nil):
		return v.jwks.key(t)
	case v.pub != nil && slices.Contains(v.methods, alg):
		return v.pub, nil
	case v.jwks != nil:
		return v.jwks.key(t)
	}
	return nil, errNoKey
}

var errNoKey = errors.New("no key for this algorithm")

// Ready reports whether the Verifier can check tokens: without a JWKS at
// once; with one, once Run has fetched its keys.
func (v *Verifier) Ready() error {
	if v.jwks != nil && v.jwks.current.Load() == nil {
		return errors.New("auth: JWKS keys not fetched yet")
	}
	return nil
}

// Run keeps the JWKS keys fresh until ctx ends: it fetches them at once,
// again every JWKSRefresh, and sooner (no more than once every
// JWKSMinRefresh) when a token names a key it does not have. A fetch that
// fails keeps the keys already known. Without a JWKS it only waits for
// ctx. Call it once; it returns nil once its goroutine is done.
func (v *Verifier) Run(ctx context.Context) error {
	if v.jwks == nil {
		<-ctx.Done()
		return nil
	}
	v.jwks.run(ctx)
	return nil
}

// tokenError is a refused token: kind is ErrInvalid or ErrExpired, reason
// a fixed phrase, cause the jwt package's error (for errors.Is).
type tokenError struct {
	kind   error
	reason string
	cause  error
}

func (e *tokenError) Error() string   { return e.kind.Error() + ": " + e.reason }
func (e *tokenError) Unwrap() []error { return []error{e.kind, e.cause} }

// reasons phrase the jwt package's errors without their details, which
// may quote a header the client chose.
var reasons = []struct {
	err    error
	reason string
}{
	{jwt.ErrTokenMalformed, "malformed"},
	{jwt.ErrTokenUnverifiable, "no key to check it: unknown algorithm or key id"},
	{jwt.ErrTokenSignatureInvalid, "bad signature, or an algorithm its key does not allow"},
	{jwt.ErrTokenRequiredClaimMissing, "no exp claim"},
	{jwt.ErrTokenNotValidYet, "not valid yet (nbf)"},
	{jwt.ErrTokenUsedBeforeIssued, "issued in the future (iat)"},
	{jwt.ErrTokenInvalidIssuer, "wrong issuer (iss)"},
	{jwt.ErrTokenInvalidAudience, "wrong audience (aud)"},
	{jwt.ErrTokenInvalidClaims, "bad claims"},
}

func classify(err error) error {
	// The jwt package checks claims only once the signature holds, and
	// reports every claim that fails: expired alone means a fresh token
	// of the same kind will do.
	for _, r := range reasons[:len(reasons)-1] {
		if errors.Is(err, r.err) {
			return &tokenError{ErrInvalid, r.reason, err}
		}
	}
	if errors.Is(err, jwt.ErrTokenExpired) {
		return &tokenError{ErrExpired, "exp has passed", err}
	}
	return &tokenError{ErrInvalid, "bad claims", err}
}
