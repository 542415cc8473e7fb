package roomgate

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/roomgate/roomgate/auth"
)

// authFlagNames names the flag behind each auth.Options field, so a bad
// value fails the start with a message naming the flag.
var authFlagNames = map[string]string{
	"Secret":       "-jwt-secret",
	"PublicKeyPEM": "-jwt-public-key",
	"JWKSURL":      "-jwt-jwks-url",
}

// verifier builds the token verifier, or returns nil for dev mode when no
// key is configured.
func (c *Config) verifier(log *slog.Logger) (*auth.Verifier, error) {
	if c.JWTSecret == "" && c.JWTPublicKey == "" && c.JWTJWKSURL == "" {
		for flag, v := range map[string]string{"-jwt-issuer": c.JWTIssuer, "-jwt-audience": c.JWTAudience} {
			if v != "" {
				return nil, fmt.Errorf("%s needs a key to check tokens with: -jwt-secret, -jwt-public-key or -jwt-jwks-url", flag)
			}
		}
		return nil, nil
	}
	o := auth.Options{JWKSURL: c.JWTJWKSURL, Issuer: c.JWTIssuer, Audience: c.JWTAudience, Logger: log}
	if c.JWTSecret != "" {
		o.Secret = []byte(c.JWTSecret)
	}
	if c.JWTPublicKey != "" {
		b, err := os.ReadFile(c.JWTPublicKey)
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
