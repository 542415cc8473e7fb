package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// MinSecretBytes is the shortest HS256 secret New accepts: RFC 7518 §3.2
// asks for a key as long as the hash, and anything shorter can be
// recovered offline from a single token.
const MinSecretBytes = 32

// minRSABits is the smallest RSA key accepted, as NIST SP 800-131A.
const minRSABits = 2048

var (
	hmacMethods = []string{"HS256", "HS384", "HS512"}
	rsaMethods  = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	// jwksMethods are what a JWKS may verify: never HMAC, whose key would
	// be public in the set.
	jwksMethods = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

// ParsePublicKeyPEM reads the first PEM block of b: a public key (PKIX
// "PUBLIC KEY" or PKCS #1 "RSA PUBLIC KEY") or a certificate, whose key
// is taken. It returns the key and the algorithms it may verify.
func ParsePublicKeyPEM(b []byte) (crypto.PublicKey, []string, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, nil, errors.New("no PEM block found")
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY":
		return nil, nil, fmt.Errorf("%s given where a public key belongs: give the public key only", block.Type)
	default:
		return nil, nil, fmt.Errorf("PEM block %q is not a public key", block.Type)
	}
	if err != nil {
		return nil, nil, err
	}
	methods, err := methodsFor(key)
	if err != nil {
		return nil, nil, err
	}
	return key, methods, nil
}

// methodsFor pins the algorithms a public key may verify to its type.
func methodsFor(key any) ([]string, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits; at least %d", k.N.BitLen(), minRSABits)
		}
		return rsaMethods, nil
	case *ecdsa.PublicKey:
		m, err := ecdsaMethod(k.Curve)
		return []string{m}, err
	case ed25519.PublicKey:
		return []string{"EdDSA"}, nil
	}
	return nil, fmt.Errorf("%T keys are not supported: use RSA, ECDSA (P-256, P-384, P-521) or Ed25519", key)
}

func ecdsaMethod(c elliptic.Curve) (string, error) {
	switch c {
	case elliptic.P256():
		return "ES256", nil
	case elliptic.P384():
		return "ES384", nil
	case elliptic.P521():
		return "ES512", nil
	}
	return "", fmt.Errorf("ECDSA curve %s is not supported: use P-256, P-384 or P-521", c.Params().Name)
}

// ParsePrivateKeyPEM reads the first PEM block of b as a private key for
// Mint: PKCS #8 ("PRIVATE KEY"), PKCS #1 ("RSA PRIVATE KEY") or SEC 1
// ("EC PRIVATE KEY"); RSA, ECDSA or Ed25519.
func ParsePrivateKeyPEM(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T keys are not supported", key)
	}
	if _, err := signingMethod(s); err != nil {
		return nil, err
	}
	return s, nil
}

// signingMethod is the algorithm Mint signs with for key: the first one
// its public half may verify.
func signingMethod(key crypto.Signer) (jwt.SigningMethod, error) {
	methods, err := methodsFor(key.Public())
	if err != nil {
		return nil, err
	}
	return jwt.GetSigningMethod(methods[0]), nil
}
