package paysim

import (
	"io"
	"net/http"
	"time"
)

// Deliver POSTs a notification to url until accepted(resp, body) reports
// success or the retry schedule (Options.NotifyRetry) runs out. build is
// called for every attempt so each carries a fresh timestamp and
// signature, as the providers do; kind names the notification in the log.
// An empty url sends nothing.
func (s *Server) Deliver(kind, url string, build func() (*http.Request, error), accepted func(*http.Response, []byte) bool) {
	if url == "" {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		for attempt := 0; attempt <= len(s.opts.NotifyRetry); attempt++ {
			if attempt > 0 {
				t := time.NewTimer(s.opts.NotifyRetry[attempt-1])
				select {
				case <-s.ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			req, err := build()
			if err != nil {
				s.log.Error("build notification", "kind", kind, "err", err)
				return
			}
			resp, err := s.opts.HTTPClient.Do(req.WithContext(s.ctx))
			if err != nil {
				if s.ctx.Err() != nil {
					return
				}
				s.notDelivered(req.URL.Host, "notification not delivered", "kind", kind, "attempt", attempt+1, "err", err)
				continue
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if accepted(resp, body) {
				s.log.Debug("notification delivered", "kind", kind, "attempt", attempt+1)
				return
			}
			s.notDelivered(req.URL.Host, "notification refused", "kind", kind, "attempt", attempt+1, "status", resp.StatusCode)
		}
		s.log.Debug("notification given up", "kind", kind, "attempts", len(s.opts.NotifyRetry)+1)
	}()
}

// notDelivered logs a failed notification attempt: at info level the first
// time host fails, with a note that its retries are quiet; at debug level
// after that, so an unreachable placeholder URL does not flood the log.
func (s *Server) notDelivered(host, msg string, args ...any) {
	s.mu.Lock()
	first := !s.unreachable[host]
	s.unreachable[host] = true
	s.mu.Unlock()
	if first {
		s.log.Info(msg+"; further failures to this host are logged at debug level", append(args, "host", host)...)
		return
	}
	s.log.Debug(msg, append(args, "host", host)...)
}
