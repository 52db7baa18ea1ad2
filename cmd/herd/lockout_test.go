package main

import (
	"net/http"
	"strings"
	"testing"
)

// TestNoLockout is issue 17's lockout, tried again with the real binary: on a fresh keyless
// gateway the README's `herd keys create carol --scopes inference` is refused and says why; an
// admin key first, then carol, leaves the admin in charge (herd nodes, /metrics); a restart says
// that keys are required (not "serving without authentication"); and with the admin key's secret
// lost, HERD_ADMIN_KEYS on a restart gets the admin back, as the README says. About 5 s.
func TestNoLockout(t *testing.T) {
	c := startGateway(t)
	out, err := runCLI(t, "keys", "create", "carol", "--scopes", "inference", "--url", c.url)
	if err == nil || !strings.Contains(err.Error(), "first_key_not_admin") && !strings.Contains(err.Error(), "Create an admin key first") {
		t.Fatalf("a non-admin first key: %q %v; want a refusal saying to create an admin key first", out, err)
	}
	ops, err := runCLI(t, "keys", "create", "ops", "--scopes", "admin,inference,batch", "--url", c.url)
	if err != nil {
		t.Fatal(err)
	}
	ops = strings.TrimSpace(ops)
	if _, err := runCLI(t, "keys", "create", "carol", "--scopes", "inference", "--url", c.url, "--api-key", ops); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "nodes", "--url", c.url, "--api-key", ops); err != nil {
		t.Fatalf("herd nodes with the admin key: %v", err)
	}
	if status, _, _ := itDo(t, "GET", c.url+"/metrics", "", "", nil); status != http.StatusUnauthorized {
		t.Fatalf("/metrics without a key once keys exist: %d, want 401", status)
	}
	if status, _, _ := itDo(t, "GET", c.url+"/metrics", ops, "", nil); status != http.StatusOK {
		t.Fatalf("/metrics with the admin key: %d", status)
	}
	if !strings.Contains(c.gw.output(), "event=key.create actor=ops") {
		t.Errorf("the gateway's log has no audit record of carol's creation by ops:\n%s", c.gw.output())
	}

	c.gw.stop()
	c.restartGateway()
	if out := c.gw.output(); strings.Contains(out, "without authentication") || !strings.Contains(out, "API keys required") ||
		!strings.Contains(out, "stored_keys=2") || !strings.Contains(out, "admin_keys=1") {
		t.Fatalf("after a restart with stored keys the gateway says:\n%s", out)
	}

	// The admin key's secret is lost: HERD_ADMIN_KEYS on a restart gets an admin back.
	c.gw.stop()
	const recovery = "sk-recovery-admin-0123456789"
	t.Setenv("HERD_ADMIN_KEYS", recovery)
	c.restartGateway()
	if _, err := runCLI(t, "keys", "--url", c.url, "--api-key", recovery); err != nil {
		t.Fatalf("herd keys with the HERD_ADMIN_KEYS key: %v", err)
	}
	if strings.Contains(c.gw.output(), recovery) || strings.Contains(c.gw.output(), ops) {
		t.Fatal("a key's secret is in the gateway's log")
	}
}
