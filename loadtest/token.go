package loadtest

import (
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// mintToken signs an HS256 token for user sub that covers every room of
// class, valid for ttl: what a deployment with -jwt-secret asks of clients.
func mintToken(secret, sub, class string, ttl time.Duration) string {
	claims := jwt.MapClaims{
		"sub":   sub,
		"name":  sub,
		"rooms": []string{class + "/*"},
		"iat":   time.Now().Unix(),
		"exp":   time.Now().Add(ttl).Unix(),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		panic(err) // HS256 with a []byte key cannot fail
	}
	return s
}
