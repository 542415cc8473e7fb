// Package auth verifies and mints the JSON Web Tokens that let clients into
// Roomgate: who a socket's user is, which rooms it may join, and whether it
// may call the admin API. It imports no other Roomgate package; the gateway
// calls it at the handshake and on every admin request, and `roomgate token`
// mints with it.
//
// # Usage
//
//	v, err := auth.New(auth.Options{Secret: secret, Issuer: "https://id.example"})
//	if err != nil { ... }
//	go v.Run(ctx) // only does something with a JWKS URL: fetches and refreshes its keys
//	c, err := v.Verify(token)
//	switch {
//	case errors.Is(err, auth.ErrMissing), errors.Is(err, auth.ErrExpired), errors.Is(err, auth.ErrInvalid):
//		// 401
//	case !c.Covers("chat", "lobby"):
//		// 403
//	}
//
// # Keys and algorithms
//
// Each key source allows only the algorithms of its key type, so a token
// cannot choose how it is checked (`alg: none`, or an HS256 token signed with
// an RSA public key used as an HMAC secret): a secret allows HS256, HS384 and
// HS512; an RSA public key RS256/384/512 and PS256/384/512; an ECDSA key the
// ES algorithm of its curve; an Ed25519 key EdDSA; a JWKS the asymmetric
// algorithms only, each key checked against its own type and `alg`.
//
// # Concurrency
//
// A Verifier's methods are safe to call from any goroutine. New starts
// nothing; Run, called once, owns the one goroutine that refreshes JWKS
// keys and returns when its context ends.
package auth
