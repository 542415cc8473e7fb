package roomgate

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/roomgate/roomgate/auth"
)

// authFlags are serve's token flags.
type authFlags struct {
	secret, publicKey, jwks, issuer, audience *string
}

func addAuthFlags(fs *flag.FlagSet) *authFlags {
	return &authFlags{
		secret:    fs.String("jwt-secret", "", "HS256 secret of client tokens, at least 32 bytes; prefer ROOMGATE_JWT_SECRET, as a flag shows in ps"),
		publicKey: fs.String("jwt-public-key", "", "PEM file of the public key that signs client tokens: RSA, ECDSA or Ed25519"),
		jwks:      fs.String("jwt-jwks-url", "", "JWKS URL of the keys that sign client tokens; fetched, cached and rotated by kid"),
		issuer:    fs.String("jwt-issuer", "", "when set, a token's iss must equal it"),
		audience:  fs.String("jwt-audience", "", "when set, a token's aud must contain it"),
	}
}

// authFlagNames names the flag behind each auth.Options field, so a bad
// value fails the start with a message naming the flag.
var authFlagNames = map[string]string{
	"Secret":       "-jwt-secret",
	"PublicKeyPEM": "-jwt-public-key",
	"JWKSURL":      "-jwt-jwks-url",
}

// verifier builds the token verifier, or returns nil for dev mode when no
// key is configured.
func (a *authFlags) verifier(log *slog.Logger) (*auth.Verifier, error) {
	if *a.secret == "" && *a.publicKey == "" && *a.jwks == "" {
		for flag, v := range map[string]string{"-jwt-issuer": *a.issuer, "-jwt-audience": *a.audience} {
			if v != "" {
				return nil, fmt.Errorf("%s needs a key to check tokens with: -jwt-secret, -jwt-public-key or -jwt-jwks-url", flag)
			}
		}
		return nil, nil
	}
	o := auth.Options{JWKSURL: *a.jwks, Issuer: *a.issuer, Audience: *a.audience, Logger: log}
	if *a.secret != "" {
		o.Secret = []byte(*a.secret)
	}
	if *a.publicKey != "" {
		b, err := os.ReadFile(*a.publicKey)
		if err != nil {
			return nil, fmt.Errorf("-jwt-public-key: %w", err)
		}
		o.PublicKeyPEM = b
	}
	v, err := auth.New(o)
	var oe *auth.OptionError
	if errors.As(err, &oe) && authFlagNames[oe.Field] != "" {
		return nil, fmt.Errorf("%s: %w", authFlagNames[oe.Field], oe.Err)
	}
	return v, err
}

// devModeWarning is logged at start when no key is configured, as DESIGN
// §1 promises: everything a token would guard is open.
const devModeWarning = "DEV MODE: no -jwt-secret, -jwt-public-key or -jwt-jwks-url: anyone who reaches this node " +
	"opens any room as any user (?user=), and the admin API answers whoever runs on this machine; configure a key before exposing it"
