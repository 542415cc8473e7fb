package client

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second
	for _, tc := range []struct {
		attempt int
		full    time.Duration
	}{
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, 1600 * time.Millisecond},
		{6, 2 * time.Second},
		{60, 2 * time.Second}, // no overflow
	} {
		for range 100 {
			if d := backoff(tc.attempt, lo, hi); d < tc.full/2 || d > tc.full {
				t.Fatalf("backoff(%d) = %v, want [%v, %v]", tc.attempt, d, tc.full/2, tc.full)
			}
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		v    string
		want time.Duration
	}{
		{"none", "", 0},
		{"seconds", "3", 3 * time.Second},
		{"date", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"past date", now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"zero", "0", 0},
		{"negative", "-5", 0},
		{"huge", "99999999999999999", maxRetryAfter * time.Second},
		{"garbage", "soon", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseRetryAfter(tc.v, now); got != tc.want {
				t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.v, got, tc.want)
			}
		})
	}
}

func TestParseError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   Error
		text   string
	}{
		{"roomgate's", 404, `{"error":{"code":"room_not_found","message":"no such room"}}`,
			Error{Status: 404, Code: "room_not_found", Message: "no such room"}, "404 room_not_found: no such room"},
		{"a proxy's page", 502, "<html>Bad Gateway</html>\n",
			Error{Status: 502, Message: "<html>Bad Gateway</html>"}, "502 bad_gateway: <html>Bad Gateway</html>"},
		{"empty", 503, "", Error{Status: 503}, "503 service_unavailable"},
		{"JSON without a code", 500, `{"error":{}}`, Error{Status: 500, Message: `{"error":{}}`}, `500 internal_server_error: {"error":{}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseError(tc.status, []byte(tc.body))
			if *got != tc.want || got.Error() != tc.text {
				t.Errorf("parseError = %+v %q, want %+v %q", *got, got.Error(), tc.want, tc.text)
			}
		})
	}
	long := parseError(502, []byte(strings.Repeat("é", 300)))
	if !utf8.ValidString(long.Message) || !strings.HasSuffix(long.Message, "…") || len(long.Message) > 200+len("…") {
		t.Errorf("a long body became %q", long.Message)
	}
}

// FuzzParseError: whatever a node or a proxy answers, the client makes an
// Error of it without panicking: its status kept, a short valid UTF-8
// message, a Retry-After never negative.
func FuzzParseError(f *testing.F) {
	f.Add(404, []byte(`{"error":{"code":"room_not_found","message":"gone"}}`), "")
	f.Add(429, []byte(`{"error":{"code":"rate_limited","message":"slow down"}}`), "2")
	f.Add(502, []byte("<html>Bad Gateway</html>"), "Wed, 21 Oct 2015 07:28:00 GMT")
	f.Add(500, []byte(`{"error":null}`), "-1")
	f.Add(503, []byte("\xff\xfe"+strings.Repeat("x", 300)), "99999999999999999999")
	f.Fuzz(func(t *testing.T, status int, body []byte, retryAfter string) {
		e := parseError(status, body)
		if e.Status != status {
			t.Fatalf("status %d became %d", status, e.Status)
		}
		if e.Code == "" && (!utf8.ValidString(e.Message) || len(e.Message) > 200+len("…")) {
			t.Fatalf("message %q", e.Message)
		}
		_ = e.Error()
		if d := parseRetryAfter(retryAfter, time.Now()); d < 0 || d > maxRetryAfter*time.Second {
			t.Fatalf("Retry-After %q = %v", retryAfter, d)
		}
	})
}
