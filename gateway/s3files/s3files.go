// Package s3files keeps bulk file contents (uploads and batch outputs) in an S3-compatible
// object store, so that several gateways share them without a shared filesystem. It implements
// gateway/batch's Contents with minio-go.
//
// The location is a URL: s3://BUCKET/PREFIX, with optional query parameters endpoint (the
// server's URL, http:// or https://; default AWS S3) and region. Credentials come from the
// environment as for any S3 client: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the MINIO_*
// equivalents), else the AWS shared credentials file, else the instance's IAM role.
//
// Objects are written whole, once, by uploading a finished local file, and read back by
// downloading into an unlinked local temporary file: the batch runner reads input lines at
// offsets, and serving a download wants a seekable file. File contents are never changed after
// they are written, so no object is ever read half-written.
package s3files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Location is a parsed s3:// URL.
type Location struct {
	Bucket   string
	Prefix   string // "" or ending in "/"
	Endpoint string // host[:port]
	Secure   bool
	Region   string
}

// ParseURL parses s3://BUCKET[/PREFIX][?endpoint=URL&region=R].
func ParseURL(raw string) (Location, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Location{}, fmt.Errorf("files url: %w", err)
	}
	if u.Scheme != "s3" {
		return Location{}, fmt.Errorf("files url %q: want s3://bucket/prefix", raw)
	}
	if u.User != nil || u.Fragment != "" {
		return Location{}, fmt.Errorf("files url %q: credentials go in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), not the URL", raw)
	}
	loc := Location{Bucket: u.Host, Endpoint: "s3.amazonaws.com", Secure: true}
	if !validBucket(loc.Bucket) {
		return Location{}, fmt.Errorf("files url %q: bucket name %q is not valid (3-63 lowercase letters, digits, dots, hyphens)", raw, loc.Bucket)
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if strings.Contains(p, "//") || strings.Contains("/"+p+"/", "/../") || strings.Contains("/"+p+"/", "/./") {
			return Location{}, fmt.Errorf("files url %q: prefix %q is not a clean path", raw, p)
		}
		loc.Prefix = p + "/"
	}
	q := u.Query()
	for k := range q {
		if k != "endpoint" && k != "region" {
			return Location{}, fmt.Errorf("files url %q: unknown parameter %q (endpoint, region)", raw, k)
		}
	}
	if e := q.Get("endpoint"); e != "" {
		eu, err := url.Parse(e)
		if err != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" || (eu.Path != "" && eu.Path != "/") {
			return Location{}, fmt.Errorf("files url %q: endpoint %q: want http(s)://host[:port]", raw, e)
		}
		loc.Endpoint, loc.Secure = eu.Host, eu.Scheme == "https"
	}
	loc.Region = q.Get("region")
	return loc, nil
}

func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for i, c := range b {
		ok := 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || (c == '.' || c == '-') && i > 0 && i < len(b)-1
		if !ok {
			return false
		}
	}
	return true
}

// Store keeps contents under one bucket and prefix.
type Store struct {
	client *minio.Client
	loc    Location
	// tmpDir is where downloads are staged (the gateway's data dir).
	tmpDir string
}

// Open connects to the location raw names and checks that its bucket exists (a missing bucket
// is a start-up error, not a failure at the first upload). tmpDir is where downloaded contents
// are staged.
func Open(ctx context.Context, raw, tmpDir string) (*Store, error) {
	loc, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	creds := credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{}, &credentials.EnvMinio{}, &credentials.FileAWSCredentials{}, &credentials.IAM{},
	})
	client, err := minio.New(loc.Endpoint, &minio.Options{Creds: creds, Secure: loc.Secure, Region: loc.Region})
	if err != nil {
		return nil, fmt.Errorf("files url: %w", err)
	}
	ok, err := client.BucketExists(ctx, loc.Bucket)
	if err != nil {
		return nil, fmt.Errorf("files url: bucket %s at %s: %w", loc.Bucket, loc.Endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("files url: bucket %s does not exist at %s", loc.Bucket, loc.Endpoint)
	}
	return &Store{client: client, loc: loc, tmpDir: tmpDir}, nil
}

// key is the object name of a file ID (IDs are hex with a prefix: safe as object names).
func (s *Store) key(id string) string { return s.loc.Prefix + path.Base(id) }

// Commit uploads the local file tmp as id's content and removes tmp.
func (s *Store) Commit(ctx context.Context, id, tmp string) error {
	defer os.Remove(tmp)
	if _, err := s.client.FPutObject(ctx, s.loc.Bucket, s.key(id), tmp, minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
		return fmt.Errorf("s3files: put %s: %w", id, err)
	}
	return nil
}

// Open downloads id's content into an unlinked temporary file and returns it at its start.
func (s *Store) Open(ctx context.Context, id string) (*os.File, error) {
	obj, err := s.client.GetObject(ctx, s.loc.Bucket, s.key(id), minio.GetObjectOptions{})
	if err != nil {
		return nil, s.notFound(id, err)
	}
	defer obj.Close()
	f, err := os.CreateTemp(s.tmpDir, ".tmp-s3-*")
	if err != nil {
		return nil, fmt.Errorf("s3files: get %s: %w", id, err)
	}
	// Unlinked at once: the open file is all that holds it, so nothing is left behind.
	os.Remove(f.Name())
	if _, err := io.Copy(f, obj); err != nil {
		f.Close()
		return nil, s.notFound(id, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("s3files: get %s: %w", id, err)
	}
	return f, nil
}

// notFound turns S3's NoSuchKey into an error wrapping fs.ErrNotExist.
func (s *Store) notFound(id string, err error) error {
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return fmt.Errorf("s3files: %s: %w", id, fs.ErrNotExist)
	}
	return fmt.Errorf("s3files: get %s: %w", id, err)
}

// Remove deletes id's content (S3 answers a missing key's delete with success).
func (s *Store) Remove(ctx context.Context, id string) error {
	if err := s.client.RemoveObject(ctx, s.loc.Bucket, s.key(id), minio.RemoveObjectOptions{}); err != nil {
		var er minio.ErrorResponse
		if errors.As(err, &er) && er.Code == minio.NoSuchKey {
			return nil
		}
		return fmt.Errorf("s3files: remove %s: %w", id, err)
	}
	return nil
}
