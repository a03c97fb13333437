package broker

import "testing"

// The default same-host rule: a port left out is the scheme's default, on
// either side.
func TestSameHost(t *testing.T) {
	for _, tc := range []struct {
		origin, host string
		want         bool
	}{
		{"http://example.com", "example.com", true},
		{"https://example.com", "example.com", true}, // TLS ended by a proxy
		{"http://example.com:80", "example.com", true},
		{"http://example.com", "example.com:80", true},
		{"https://example.com", "example.com:443", true},
		{"https://example.com:443", "EXAMPLE.com", true},
		{"http://example.com:3000", "example.com:3000", true},
		{"http://[::1]:3000", "[::1]:3000", true},
		{"http://[::1]", "[::1]", true},
		{"http://example.com", "example.com:443", false},
		{"http://example.com:8080", "example.com", false},
		{"http://example.com", "example.com:3000", false},
		{"http://example.com.evil", "example.com", false},
		{"ftp://example.com", "example.com", false},
		{"null", "example.com", false},
		{"http://", "", false},
	} {
		if got := sameHost(tc.origin, tc.host); got != tc.want {
			t.Errorf("sameHost(%q, %q) = %v, want %v", tc.origin, tc.host, got, tc.want)
		}
	}
}
