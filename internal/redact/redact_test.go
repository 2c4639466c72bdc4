package redact

import (
	"strings"
	"testing"
)

func TestURLHidesPasswordAndQueryValues(t *testing.T) {
	for in, want := range map[string]string{
		"redis://:s3cret@127.0.0.1:6379/0":              "redis://:xxxxx@127.0.0.1:6379/0",
		"redis://127.0.0.1:6379/0?password=s3cret&db=0": "redis://127.0.0.1:6379/0?db=xxxxx&password=xxxxx",
		"rediss://u:s3cret@h:6380/1?password=s3cret":    "rediss://u:xxxxx@h:6380/1?password=xxxxx",
		"unix:///run/redis.sock":                        "unix:///run/redis.sock",
		"redis://h:6379/0?%zz=s3cret":                   "redis://h:6379/0", // (a pair the query cannot decode is dropped)
		"redis://[::1:6379/0?password=s3cret":           "(unparsable URL, not shown: it may hold a password)",
	} {
		got := URL(in)
		if got != want || strings.Contains(got, "s3cret") {
			t.Errorf("URL(%q) = %q, want %q", in, got, want)
		}
	}
}
