package s3files

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		in   string
		want Location
	}{
		{"s3://herd-files", Location{Bucket: "herd-files", Endpoint: "s3.amazonaws.com", Secure: true}},
		{"s3://herd-files/bulk/", Location{Bucket: "herd-files", Prefix: "bulk/", Endpoint: "s3.amazonaws.com", Secure: true}},
		{"s3://b.example/a/b?region=eu-west-1", Location{Bucket: "b.example", Prefix: "a/b/", Endpoint: "s3.amazonaws.com", Secure: true, Region: "eu-west-1"}},
		{"s3://herd/p?endpoint=http://127.0.0.1:7070", Location{Bucket: "herd", Prefix: "p/", Endpoint: "127.0.0.1:7070"}},
		{"s3://herd/p?endpoint=https://minio.lan:9000/", Location{Bucket: "herd", Prefix: "p/", Endpoint: "minio.lan:9000", Secure: true}},
	}
	for _, tc := range tests {
		got, err := ParseURL(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	bad := map[string]string{
		"":                                  "want s3://",
		"http://bucket/p":                   "want s3://",
		"s3://AB/p":                         "bucket name",
		"s3://ab/p":                         "bucket name",
		"s3://-bucket/p":                    "bucket name",
		"s3://key:secret@bucket/p":          "credentials go in the environment",
		"s3://bucket/a/../b":                "not a clean path",
		"s3://bucket/a//b":                  "not a clean path",
		"s3://bucket/p?endpoint=ftp://x":    "endpoint",
		"s3://bucket/p?endpoint=http://x/y": "endpoint",
		"s3://bucket/p?secure=false":        "unknown parameter",
	}
	for in, want := range bad {
		if _, err := ParseURL(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseURL(%q): %v, want an error about %q", in, err, want)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"s3://herd-files/bulk", "s3://b/p?endpoint=http://h:1&region=r", "s3://x", "s3://a/../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		loc, err := ParseURL(in)
		if err != nil {
			return
		}
		// What parses names a valid bucket and a prefix that cannot climb out of it.
		if !validBucket(loc.Bucket) || strings.Contains(loc.Prefix, "..") && strings.Contains("/"+loc.Prefix, "/../") || strings.HasPrefix(loc.Prefix, "/") {
			t.Fatalf("ParseURL(%q) = %+v", in, loc)
		}
		if loc.Prefix != "" && !strings.HasSuffix(loc.Prefix, "/") {
			t.Fatalf("ParseURL(%q): prefix %q does not end in /", in, loc.Prefix)
		}
	})
}
