package auth

import (
	"crypto"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MintOptions is the key Mint signs with: Secret or PrivateKey, not both.
type MintOptions struct {
	Secret     []byte        // HS256, at least MinSecretBytes
	PrivateKey crypto.Signer // RSA (RS256), ECDSA (ES256/384/512 by curve) or Ed25519 (EdDSA); see ParsePrivateKeyPEM
	KeyID      string        // the kid header: which key of a JWKS signed; empty for none
}

// Mint signs c as a token, for `roomgate token`, tests and backends written
// in Go. c.Subject and c.ExpiresAt are required; a zero IssuedAt is now.
// c.Extra must be a JSON object without registered claims.
func Mint(o MintOptions, c Claims) (string, error) {
	if c.Subject == "" {
		return "", errors.New("auth: mint: a token needs a subject")
	}
	if c.ExpiresAt.IsZero() {
		return "", errors.New("auth: mint: a token needs an expiry")
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	var method jwt.SigningMethod
	var key any
	switch {
	case (o.Secret != nil) == (o.PrivateKey != nil):
		return "", errors.New("auth: mint: give a secret or a private key, not both")
	case o.Secret != nil:
		if len(o.Secret) < MinSecretBytes {
			return "", fmt.Errorf("auth: mint: secret of %d bytes; at least %d", len(o.Secret), MinSecretBytes)
		}
		method, key = jwt.SigningMethodHS256, o.Secret
	default:
		var err error
		if method, err = signingMethod(o.PrivateKey); err != nil {
			return "", fmt.Errorf("auth: mint: %w", err)
		}
		key = o.PrivateKey
	}
	t := jwt.NewWithClaims(method, &payload{c: c})
	if o.KeyID != "" {
		t.Header["kid"] = o.KeyID
	}
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	return s, nil
}
