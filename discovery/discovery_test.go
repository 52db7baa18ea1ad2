package discovery

import (
	"context"
	"net"
	"os"
	"os/exec"
	"reflect"
	"testing"
	"time"
)

// InNetns runs the calling test again inside a new user and network namespace whose loopback
// carries multicast (this machine's own lo has no MULTICAST flag, and a test must not announce
// on a real LAN): it reports true in the child, where the test goes on, and false in the parent,
// after the child passed (its failure fails the parent).
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv("HERD_IN_NETNS") == "1" {
		return true
	}
	if testing.Short() {
		t.Skip("multicast in a network namespace (skipped with -short)")
	}
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: cannot make a network namespace", tool)
		}
	}
	script := `set -e
ip link set lo up
ip link set lo multicast on
ip route add 224.0.0.0/4 dev lo
exec "$0" -test.run "^$1\$" -test.v -test.count=1`
	cmd := exec.Command("unshare", "-rn", "sh", "-c", script, os.Args[0], t.Name())
	cmd.Env = append(os.Environ(), "HERD_IN_NETNS=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in the namespace:\n%s", out)
	if err != nil {
		t.Fatalf("the test failed in its network namespace: %v", err)
	}
	return false
}

func TestAnnounceAndBrowse(t *testing.T) {
	if !inNetns(t) {
		return
	}
	const fp = "sha256:" + "ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01ab01"
	a, err := Announce(Announcement{Instance: "gw A:8443", Port: 8443, IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		Scheme: "https", Fingerprint: fp, ID: "gw-a", Version: "v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Announce(Announcement{Instance: "gw-b", Port: 8080, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Scheme: "http", ID: "gw-b"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	ctx := context.Background()
	got, err := Browse(ctx, 2*time.Second, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []Gateway{ // sorted by URL
		{Instance: "gw-b", URL: "http://127.0.0.1:8080", ID: "gw-b"},
		{Instance: "gw-a-8443", URL: "https://127.0.0.1:8443", Fingerprint: fp, ID: "gw-a", Version: "v1.2.3"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Browse: %+v\nwant %+v", got, want)
	}
	// An agent whose join token pins the CA keeps to its cluster's gateways.
	if got, err := Browse(ctx, time.Second, fp); err != nil || len(got) != 1 || got[0].ID != "gw-a" {
		t.Errorf("Browse for %s: %+v %v", fp, got, err)
	}
	a.Close()
	b.Close()
	if got, err := Browse(ctx, time.Second, ""); err != nil || len(got) != 0 {
		t.Errorf("after Close: %+v %v", got, err)
	}
}

func TestParseTXT(t *testing.T) {
	got := ParseTXT([]string{"scheme=https", "FP=sha256:x", "fp=second", "flag", "=v", "k=a=b"})
	want := map[string]string{"scheme": "https", "fp": "sha256:x", "flag": "", "k": "a=b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseTXT: %v, want %v", got, want)
	}
}

func FuzzParseTXT(f *testing.F) {
	f.Add("scheme=https", "fp=sha256:00", "")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		m := ParseTXT([]string{a, b, c})
		for k := range m {
			if k == "" {
				t.Fatal("empty key")
			}
		}
	})
}

func TestDNSLabel(t *testing.T) {
	for in, want := range map[string]string{"gw-a": "gw-a", "Host.lan:8080": "host-lan-8080", "": "herd-gateway", "---": "herd-gateway"} {
		if got := dnsLabel(in); got != want {
			t.Errorf("dnsLabel(%q) = %q, want %q", in, got, want)
		}
	}
}
