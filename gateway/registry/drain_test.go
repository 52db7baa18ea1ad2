package registry

import "testing"

// TestSharedDrain checks how a read of the shared table sets a node's drain.
func TestSharedDrain(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		held, inTable, lostData bool
		wantNext, wantWriteBack bool
	}{
		{"neither", false, false, false, false, false},
		{"drained elsewhere", false, true, false, true, false},
		{"undrained elsewhere", true, false, false, false, false},
		{"both", true, true, false, true, false},
		{"table lost a drain held here: written back", true, false, true, true, true},
		{"table lost its data, nothing held", false, false, true, false, false},
		{"table lost its data, drained again since", false, true, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, wb := sharedDrain(tc.held, tc.inTable, tc.lostData)
			if next != tc.wantNext || wb != tc.wantWriteBack {
				t.Errorf("sharedDrain = %v, %v; want %v, %v", next, wb, tc.wantNext, tc.wantWriteBack)
			}
		})
	}
}
