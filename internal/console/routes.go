package console

import (
	"net/http"
	"strconv"
)

// routes builds the console's HTTP routes (docs/console.md describes the
// API). GET routes read; POST routes act (admin role, CSRF token with a
// session).
func (c *Console) routes() {
	m := http.NewServeMux()
	files := c.static()
	page := func(w http.ResponseWriter, r *http.Request) {
		c.secure(w)
		if _, ok := c.admitted(w, r); !ok {
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}
	m.HandleFunc("GET /{$}", page)
	m.HandleFunc("GET /static/", page)

	m.HandleFunc("POST /api/login", c.login)
	m.HandleFunc("GET /api/session", c.auth(false, c.whoami))
	m.HandleFunc("POST /api/logout", c.auth(true, c.logout))

	m.HandleFunc("GET /api/overview", c.auth(false, c.overview))
	m.HandleFunc("GET /api/stream", c.auth(false, c.stream))

	m.HandleFunc("GET /api/bans", c.auth(false, c.listBans))
	m.HandleFunc("POST /api/bans", c.auth(true, c.addBan))
	m.HandleFunc("POST /api/bans/remove", c.auth(true, c.removeBan))

	m.HandleFunc("GET /api/queue", c.auth(false, c.listQueue))
	m.HandleFunc("GET /api/queue/{id}", c.auth(false, c.showMessage))
	m.HandleFunc("POST /api/queue/flush", c.auth(true, c.flushQueue))
	m.HandleFunc("POST /api/queue/{id}/{action}", c.auth(true, c.queueAction))

	m.HandleFunc("GET /api/accounts", c.auth(false, c.listAccounts))
	m.HandleFunc("GET /api/accounts/{name}", c.auth(false, c.showAccount))
	m.HandleFunc("POST /api/accounts/{name}/{action}", c.auth(true, c.accountAction))

	m.HandleFunc("GET /api/reputation", c.auth(false, c.reputationStatus))
	m.HandleFunc("POST /api/reputation/check", c.auth(true, c.reputationCheck))
	m.HandleFunc("GET /api/report", c.auth(false, c.report))

	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		c.secure(w)
		fail(w, http.StatusNotFound, "no API %s %s (see docs/console.md)", r.Method, r.URL.Path)
	})
	c.mux = m
}

// paging reads offset and limit (at most maxPage, default defPage).
func paging(r *http.Request, defPage, maxPage int) (offset, limit int, err error) {
	q := r.URL.Query()
	limit = defPage
	if s := q.Get("offset"); s != "" {
		if offset, err = strconv.Atoi(s); err != nil || offset < 0 {
			return 0, 0, badRequest("offset %q: want a number from 0", s)
		}
	}
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > maxPage {
			return 0, 0, badRequest("limit %q: want a number from 1 to %d", s, maxPage)
		}
	}
	return offset, limit, nil
}

// page is one page of a list.
type page[T any] struct {
	Total  int `json:"total"`
	Offset int `json:"offset"`
	Items  []T `json:"items"`
}

func pageOf[T any](all []T, offset, limit int) page[T] {
	p := page[T]{Total: len(all), Offset: offset, Items: []T{}}
	if offset < len(all) {
		p.Items = all[offset:min(len(all), offset+limit)]
	}
	return p
}
