package main

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricValue reads one unlabelled sample from the gateway's /metrics (-1 when absent).
func (c *cluster) metricValue(name string) float64 {
	resp, err := http.Get(c.url + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// TestDeltaHeartbeatsAcrossGatewayRestart: a real agent sends its full heartbeat, then deltas;
// the gateway is killed and a new one started on the same address holds nothing, answers the
// first delta 412, and the agent sends the full heartbeat at once: the node is back, complete
// (GPUs, models), and deltas flow again. About 3 s.
func TestDeltaHeartbeatsAcrossGatewayRestart(t *testing.T) {
	t.Parallel()
	c := startGateway(t)
	c.addSimAgent("delta-1", "T4,T4")
	c.waitNodes(1)
	waitFor(t, 10*time.Second, "delta heartbeats accepted", func() bool { return c.metricValue("herd_heartbeat_deltas_total") >= 2 })

	c.gw.kill9()
	c.restartGateway()
	c.waitNodes(1)
	waitFor(t, 10*time.Second, "delta heartbeats accepted by the restarted gateway", func() bool {
		return c.metricValue("herd_heartbeat_deltas_total") >= 2
	})
	nodes, err := c.nodes()
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 || nodes[0].ID != "delta-1" || len(nodes[0].GPUs) != 2 || len(nodes[0].Models) != 3 || nodes[0].Stale {
		t.Fatalf("the restarted gateway holds %+v, want delta-1 with 2 GPUs and 3 models, fresh", nodes)
	}
	if full, all := c.metricValue("herd_heartbeats_total"), c.metricValue("herd_heartbeat_deltas_total"); full-all < 1 {
		t.Fatalf("the restarted gateway counted %v heartbeats of which %v deltas: no full heartbeat after the restart", full, all)
	}
	if out := c.agents["delta-1"].output(); strings.Contains(out, "412") || strings.Contains(out, "heartbeat_base_unknown") {
		t.Errorf("the agent logged the gateway's request for the full heartbeat as a failure:\n%s", out)
	}
}
