// Package relay forwards provider payment notifications to devices: WeChat
// Pay and Alipay POST to /notify/<device_id>/<provider>, and the relay
// publishes {"provider","headers","body"} to <prefix>/<device_id>/pay/notify
// at QoS 1, answering the provider only after the broker acknowledged it.
//
// A relay is untrusted by design: it holds no key and keeps no state (the
// device verifies every notification's signature itself), so any number of
// replicas can run behind a load balancer. cmd/notifyrelay runs one as a
// program; kioskpayd -demo runs one in-process.
package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kioskpay/kioskpay/contract"
)

// Publisher publishes one message at QoS 1 and returns once the broker has
// acknowledged it (PUBACK), or with an error.
type Publisher interface {
	Publish(ctx context.Context, topic string, payload []byte) error
	// Connected reports whether the broker connection is up.
	Connected() bool
}

// Relay turns provider notification webhooks into P/pay/notify messages.
//
// It holds no state: the provider only gets its success answer once the
// broker has the message, so a relay that dies or loses the broker mid-way
// leaves the provider to retry, possibly against another replica. It
// verifies nothing either (the daemon does, with the provider's keys the
// relay never sees); it only keeps junk off the bus cheaply.
type Relay struct {
	Prefix         string
	Pub            Publisher
	MaxBody        int64         // largest request body read; larger → 413
	PublishTimeout time.Duration // how long to wait for the broker's PUBACK
	Logger         *slog.Logger  // nil: no logging
}

// DefaultMaxBody bounds a notification body. Real ones are 1-3 KiB; the
// device refuses envelopes over contract.MaxPayload anyway.
const DefaultMaxBody = 64 << 10

// DefaultPublishTimeout is how long a request waits for the broker's PUBACK
// before the provider is told to retry.
const DefaultPublishTimeout = 5 * time.Second

// Handler returns the relay's routes.
func (r *Relay) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /notify/{device}/{provider}", r.serveNotify)
	mux.HandleFunc("GET /healthz", r.serveHealth)
	return mux
}

func (r *Relay) serveHealth(w http.ResponseWriter, _ *http.Request) {
	// A load balancer takes a replica without a broker out of rotation, so
	// providers' retries land on one that can deliver.
	if !r.Pub.Connected() {
		http.Error(w, "broker not connected", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (r *Relay) serveNotify(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	dev, provider := req.PathValue("device"), req.PathValue("provider")
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("device", dev, "provider", provider, "remote", req.RemoteAddr)
	if provider != "wxpay" && provider != "alipay" {
		log.Info("refused notification", "status", http.StatusBadRequest, "reason", "unknown provider")
		http.Error(w, "unknown provider: want wxpay or alipay", http.StatusBadRequest)
		return
	}
	fail := func(status int, reason string) {
		log.Info("refused notification", "status", status, "reason", reason)
		WriteFailure(w, provider, status, reason)
	}
	if !contract.ValidDeviceID(dev) {
		fail(http.StatusBadRequest, "bad device id")
		return
	}
	limit := r.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", limit))
			return
		}
		fail(http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	if len(body) == 0 {
		fail(http.StatusBadRequest, "empty body")
		return
	}
	// JSON strings cannot carry invalid UTF-8 unchanged, and a changed body
	// would fail its signature anyway.
	if !utf8.Valid(body) {
		fail(http.StatusBadRequest, "body is not UTF-8")
		return
	}
	if err := r.Forward(req.Context(), dev, provider, req.Header, body); err != nil {
		var fe *ForwardError
		if errors.As(err, &fe) {
			log.Info("refused notification", "status", fe.Status, "reason", fe.Msg)
			WriteFailure(w, provider, fe.Status, fe.Msg)
			return
		}
		// The message may still reach the broker later; the provider's
		// retry then makes a duplicate, which the daemon tolerates (a
		// notification is only a hint to query).
		log.Warn("publish failed", "err", err)
		WriteFailure(w, provider, http.StatusServiceUnavailable, "broker did not acknowledge")
		return
	}
	log.Debug("relayed notification", "bytes", len(body), "took", time.Since(start).Round(time.Millisecond))
	WriteSuccess(w, provider)
}

// ForwardError is a notification Forward refused to publish; Status is the
// HTTP status to answer the provider with.
type ForwardError struct {
	Status int
	Msg    string
}

func (e *ForwardError) Error() string { return e.Msg }

// Forward publishes a notification to device's P/pay/notify and returns
// once the broker acknowledged it. A *ForwardError means it was not
// published (too large, no broker); any other error that the broker did
// not acknowledge in time. paygate forwards the notifications it verified
// this way too, so a device sees one envelope whoever relayed it.
func (r *Relay) Forward(ctx context.Context, dev, provider string, header http.Header, body []byte) error {
	env := contract.NotifyPayload{RequestID: "relay-" + randomHex(8), Provider: provider, Headers: forwardHeaders(header), Body: string(body)}
	payload, err := json.Marshal(env)
	if err != nil {
		return &ForwardError{Status: http.StatusInternalServerError, Msg: "encode envelope"}
	}
	if len(payload) > contract.MaxPayload {
		return &ForwardError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("envelope of %d bytes exceeds the device limit of %d", len(payload), contract.MaxPayload)}
	}
	if !r.Pub.Connected() {
		return &ForwardError{Status: http.StatusServiceUnavailable, Msg: "broker not connected"}
	}
	timeout := r.PublishTimeout
	if timeout <= 0 {
		timeout = DefaultPublishTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return r.Pub.Publish(ctx, r.Prefix+"/"+dev+"/"+contract.TopicNotify, payload)
}

// forwardHeaders keeps what verification needs: WeChat's signature headers
// and the content type. Cookies, proxy headers and the like stay out.
func forwardHeaders(h http.Header) map[string]string {
	out := map[string]string{}
	for k, vs := range h {
		ck := http.CanonicalHeaderKey(k)
		if (strings.HasPrefix(ck, "Wechatpay-") || ck == "Content-Type") && len(vs) > 0 {
			out[ck] = vs[0]
		}
	}
	return out
}

// WriteSuccess answers the way each provider recognises as delivered:
// WeChat Pay APIv3 takes 200/204 without a body, Alipay wants the literal
// body "success".
func WriteSuccess(w http.ResponseWriter, provider string) {
	if provider == "alipay" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "success")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// WriteFailure answers so the provider retries later.
func WriteFailure(w http.ResponseWriter, provider string, status int, msg string) {
	if provider == "alipay" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		io.WriteString(w, "fail")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": "FAIL", "message": msg})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
