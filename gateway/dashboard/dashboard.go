package gateway

import (
	_ "embed"
	"net/http"

	"github.com/gin-gonic/gin"
)

// dashboardHTML is the operator's page: nodes, GPUs, resident models, load. It reads
// /admin/v1/nodes from the browser, so it needs no server-side state and shows what the API shows.
//
//go:embed dashboard/index.html
var dashboardHTML []byte

// registerDashboard serves the dashboard at /dashboard, and at / to browsers (requests that
// accept text/html); other clients of / get Ollama's "Ollama is running". The page itself holds no data; the
// admin key (if any) is entered in the page and sent by the browser.
func registerDashboard(e *gin.Engine) {
	serve := func(c *gin.Context) {
		c.Header("Cache-Control", "no-cache")
		c.Header("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
		c.Data(http.StatusOK, "text/html; charset=utf-8", dashboardHTML)
	}
	// Ollama clients probe / ("Ollama is running"); a browser asks for HTML and gets the page.
	e.GET("/", func(c *gin.Context) {
		if wantsHTML(c) {
			serve(c)
			return
		}
		c.String(http.StatusOK, msgOllamaRunning)
	})
	e.HEAD("/", func(c *gin.Context) { c.String(http.StatusOK, msgOllamaRunning) })
	e.GET("/dashboard", serve)
}
