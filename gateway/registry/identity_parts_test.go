package registry

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// TestSameHolder checks what counts as the holder of a node ID: its instance at its address.
func TestSameHolder(t *testing.T) {
	holder := agentapi.Heartbeat{NodeID: "a", InstanceID: "inst-1", Address: "http://10.0.0.1:9090"}
	for _, tc := range []struct {
		name, instance, address string
		same                    bool
	}{
		{"the holder", "inst-1", "http://10.0.0.1:9090", true},
		{"another instance elsewhere", "inst-2", "http://10.0.0.2:9090", false},
		{"a new instance at the holder's address", "inst-2", "http://10.0.0.1:9090", false},
		{"the holder's instance from another address", "inst-1", "http://10.0.0.2:9090", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claimant := agentapi.Heartbeat{NodeID: "a", InstanceID: tc.instance, Address: tc.address}
			if got := sameHolder(&holder, &claimant); got != tc.same {
				t.Errorf("sameHolder = %v, want %v", got, tc.same)
			}
		})
	}
}

// TestConflictCarriesNoInstanceID checks the refusal's fields and that its text holds
// fingerprints only.
func TestConflictCarriesNoInstanceID(t *testing.T) {
	holder := agentapi.Heartbeat{NodeID: "a", InstanceID: "inst-secret-holder", Address: "http://10.0.0.1:9090"}
	claimant := agentapi.Heartbeat{NodeID: "a", InstanceID: "inst-secret-claimant", Address: "http://10.0.0.2:9090"}
	err := conflict(&holder, &claimant, 1500*time.Millisecond, 3*time.Second)
	want := ConflictError{NodeID: "a",
		HolderFingerprint: agentapi.InstanceFingerprint(holder.InstanceID), HolderAddress: holder.Address,
		HolderAge: 1500 * time.Millisecond, HolderStaleAfter: 3 * time.Second,
		ClaimantFingerprint: agentapi.InstanceFingerprint(claimant.InstanceID), ClaimantAddress: claimant.Address}
	if *err != want {
		t.Errorf("conflict = %+v, want %+v", *err, want)
	}
	if text := err.Error(); strings.Contains(text, "inst-secret") {
		t.Errorf("error text holds an instance id: %s", text)
	}
}

// TestRefusalLog checks that a claimant is logged once a minute, each claimant on its own, and
// that the memory of claimants is bounded.
func TestRefusalLog(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	e := func(fp string) *ConflictError {
		return &ConflictError{NodeID: "a", ClaimantFingerprint: fp, ClaimantAddress: "http://10.0.0.2:9090"}
	}
	var l refusalLog
	for _, tc := range []struct {
		claimant string
		at       time.Duration
		due      bool
	}{
		{"fp1", 0, true},
		{"fp1", time.Second, false},
		{"fp2", time.Second, true},
		{"fp1", time.Minute - 1, false},
		{"fp1", time.Minute, true},
		{"fp2", time.Minute, false},
	} {
		if got := l.due(e(tc.claimant), t0.Add(tc.at)); got != tc.due {
			t.Errorf("%s at %v: due %v, want %v", tc.claimant, tc.at, got, tc.due)
		}
	}
	for i := range 5 * refusalLogCap {
		l.due(e(fmt.Sprint("cycling-", i)), t0)
	}
	if n := len(l.last); n > refusalLogCap+1 {
		t.Errorf("refusal log remembers %d claimants, bound %d", n, refusalLogCap+1)
	}
}
