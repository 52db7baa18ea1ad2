package gateway

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/scheduler"
)

// What an operator sees must be true now: a node's figures carry their age, and requests waiting
// in the gateway (not on a node) are shown. Decisions:
//   - A node's status is "up" while its heartbeat is at most 1.5 intervals old, "late" past that
//     (a beat was missed; still in the schedule), and "down" once the registry holds it stale
//     (StaleAfterBeats intervals, out of the schedule). last_seen_seconds is the heartbeat's age
//     on this gateway's clock, so a view can say "down 12s ago" and dim figures that old.
//   - The queue is admission's: requests waiting in the gateway for a node, by model and class,
//     with the bound past which the gateway answers 429 queue_full.

// Node statuses in the admin API.
const (
	nodeUp   = "up"
	nodeLate = "late"
	nodeDown = "down"
)

// registerOpsRoutes mounts /admin/v1/queue and /admin/v1/history.
func (s *Server) registerOpsRoutes(g *gin.RouterGroup) {
	g.GET("/queue", s.handleQueue)
	g.GET("/history", s.handleHistory)
}

// adminQueue is GET /admin/v1/queue.
type adminQueue struct {
	// Interactive and Batch total the waiting requests of each class.
	Interactive int          `json:"interactive"`
	Batch       int          `json:"batch"`
	Models      []queueDepth `json:"models"`
}

func (s *Server) queueBody() adminQueue {
	q := adminQueue{Models: s.core.adm.queueDepths()}
	for _, d := range q.Models {
		if d.Class == scheduler.ClassBatch {
			q.Batch += d.Waiting
		} else {
			q.Interactive += d.Waiting
		}
	}
	return q
}

func (s *Server) handleQueue(c *gin.Context) { c.JSON(http.StatusOK, s.queueBody()) }

func (s *Server) handleHistory(c *gin.Context) { c.JSON(http.StatusOK, s.history.body()) }

// liveness returns a node's heartbeat age and status at now.
func (s *Server) liveness(v registry.NodeView, now time.Time) (float64, string) {
	age := max(now.Sub(v.LastHeartbeat), 0)
	interval := s.cfg.HeartbeatInterval
	if v.Heartbeat.IntervalMS > 0 {
		interval = time.Duration(v.Heartbeat.IntervalMS) * time.Millisecond
	}
	switch {
	case v.Stale:
		return age.Seconds(), nodeDown
	case interval > 0 && age > interval*3/2:
		return age.Seconds(), nodeLate
	}
	return age.Seconds(), nodeUp
}

// adminNodeOf is toAdminNode with the node's liveness at this instant.
func (s *Server) adminNodeOf(v registry.NodeView) adminNode {
	n := toAdminNode(v)
	n.LastSeenSeconds, n.Status = s.liveness(v, s.core.clock.Now())
	return n
}
