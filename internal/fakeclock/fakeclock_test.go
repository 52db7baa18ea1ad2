package fakeclock

import (
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	c := New(t0)
	fired := make(chan string, 3)
	c.AfterFunc(time.Second, func() { fired <- "1s" })
	stopped := c.AfterFunc(time.Second, func() { fired <- "stopped" })
	c.AfterFunc(2*time.Second, func() { fired <- "2s" })
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop reports true once, for the timer it stopped")
	}
	c.Advance(999 * time.Millisecond)
	if !c.Now().Equal(t0.Add(999 * time.Millisecond)) {
		t.Fatalf("now %v", c.Now())
	}
	select {
	case f := <-fired:
		t.Fatalf("%s fired before it was due", f)
	default:
	}
	c.Advance(time.Millisecond)
	if f := <-fired; f != "1s" {
		t.Fatalf("fired %s, want 1s", f)
	}
	c.Advance(time.Hour)
	if f := <-fired; f != "2s" {
		t.Fatalf("fired %s, want 2s", f)
	}
	c.Advance(time.Hour)
	select {
	case f := <-fired:
		t.Fatalf("%s fired twice or after Stop", f)
	default:
	}
}
