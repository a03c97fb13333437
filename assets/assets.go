// Package assets holds the bundled browser client that chatd serves at /:
// one HTML page, its script and its stylesheet, embedded in the binary so
// the page works with no files beside it and no network beyond chatd.
package assets

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// ContentSecurityPolicy is the policy sent with every response of Handler.
// The page has no inline script or style, so it needs nothing looser.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// files is read-only, so it does not count as package-level mutable state.
//
//go:embed index.html app.js style.css
var files embed.FS

// page is one servable file, read and hashed once when the handler is built.
type page struct {
	body        []byte
	contentType string
	etag        string
}

type handler struct {
	pages map[string]page
}

// Handler returns an http.Handler that serves the chat page at "/" (and
// "/index.html"), "/app.js" and "/style.css". Every response carries the
// ContentSecurityPolicy and no-sniff, no-referrer and no-cache headers;
// other paths get a JSON 404 and methods other than GET and HEAD a JSON 405.
// Mount it on "/" to make it the fallback for paths no other route claims.
func Handler() http.Handler {
	index := load("index.html", "text/html; charset=utf-8")
	return &handler{pages: map[string]page{
		"/":           index,
		"/index.html": index,
		"/app.js":     load("app.js", "text/javascript; charset=utf-8"),
		"/style.css":  load("style.css", "text/css; charset=utf-8"),
	}}
}

func load(name, contentType string) page {
	body, err := files.ReadFile(name)
	if err != nil {
		// The names are fixed by the go:embed line above; the build fails first.
		panic("assets: embedded file missing: " + name)
	}
	sum := sha256.Sum256(body)
	return page{
		body:        body,
		contentType: contentType,
		etag:        `"` + hex.EncodeToString(sum[:16]) + `"`,
	}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cache-Control", "no-cache")

	// Unknown paths are 404 whatever the method: 405 would say the path exists.
	p, ok := h.pages[r.URL.Path]
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "no such page")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "only GET and HEAD are allowed here")
		return
	}

	// no-cache means "revalidate", so a matching ETag saves sending the body again.
	hdr.Set("ETag", p.etag)
	if etagMatches(r.Header.Get("If-None-Match"), p.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hdr.Set("Content-Type", p.contentType)
	hdr.Set("Content-Length", strconv.Itoa(len(p.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(p.body) // a failed write means the client went away; nothing to tell it
	}
}

// etagMatches reports whether an If-None-Match header names etag, using the
// weak comparison RFC 9110 prescribes for that header.
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, candidate := range strings.Split(header, ",") {
		candidate = strings.TrimSpace(candidate)
		if candidate == "*" || strings.TrimPrefix(candidate, "W/") == etag {
			return true
		}
	}
	return false
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	body, _ := json.Marshal(struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}{code, message})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
