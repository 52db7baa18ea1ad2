// Package dashboard serves the operator's page: nodes, GPUs, resident models, load. The page
// reads /admin/v1/nodes from the browser, so it needs no server-side state and shows what the
// API shows; the admin key (if any) is entered in the page and sent by the browser.
package dashboard

import (
	_ "embed"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// page is the dashboard, embedded in the binary.
//
//go:embed index.html
var page []byte

// Register serves the dashboard at /dashboard, and at / to browsers (requests that accept
// text/html); other clients of / (GET and HEAD) get root instead: the gateway answers them as
// Ollama does ("Ollama is running"), since Ollama clients probe / before they call /api/*.
func Register(e gin.IRoutes, root gin.HandlerFunc) {
	e.GET("/", func(c *gin.Context) {
		if wantsHTML(c) {
			Serve(c)
			return
		}
		root(c)
	})
	e.HEAD("/", root)
	e.GET("/dashboard", Serve)
}

// Serve writes the page.
func Serve(c *gin.Context) {
	c.Header("Cache-Control", "no-cache")
	c.Header("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
	c.Data(http.StatusOK, "text/html; charset=utf-8", page)
}

// wantsHTML reports whether the client asked for a web page (a browser does).
func wantsHTML(c *gin.Context) bool { return strings.Contains(c.GetHeader("Accept"), "text/html") }
