package paygate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/gateway/wire"
	"github.com/kioskpay/kioskpay/relay"
)

// MaxConcurrent bounds the requests one replica performs at once; beyond
// it paho's reader waits and the broker gives the shared subscription's
// messages to other replicas.
const MaxConcurrent = 256

// ReplyTimeout bounds the wait for the broker's PUBACK of a reply.
const ReplyTimeout = 10 * time.Second

// Server is one paygate replica's broker side: it takes requests from the
// shared subscription, has the Gate perform them and publishes the
// replies; and it forwards verified provider notifications to devices.
type Server struct {
	Gate        *Gate
	TopicPrefix string
	Logger      *slog.Logger

	client mqtt.Client
	sem    chan struct{}
	// mu guards closing; wg counts requests in flight, added to only
	// while not closing (WaitGroup.Add must not race Wait from zero).
	mu      sync.Mutex
	closing bool
	wg      sync.WaitGroup
}

// Connect starts connecting (retrying in the background) and subscribes
// on every connect. Requests that arrive are handled until Close.
func (s *Server) Connect(o mqttclient.Config) {
	s.sem = make(chan struct{}, MaxConcurrent)
	// A clean session: stateless, a request that was in flight when a
	// replica died is timed out by its device and asked again.
	s.client = mqttclient.NewServiceClient(mqttclient.ServiceOptions{
		Config: o, Filter: wire.RequestFilter(s.TopicPrefix), Handler: s.onMessage,
		Timeout: ReplyTimeout, Logger: s.log(),
		Subscribed: func(broker string) {
			s.log().Info("paygate subscribed", "broker", broker, "filter", wire.RequestFilter(s.TopicPrefix))
		},
	})
	s.client.Connect()
}

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Connected reports whether the broker connection is up.
func (s *Server) Connected() bool { return s.client != nil && s.client.IsConnectionOpen() }

// onMessage runs in its own goroutine per message (order does not
// matter); paho acknowledges the message when it returns, after the
// reply is published.
func (s *Server) onMessage(_ mqtt.Client, m mqtt.Message) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return // not acknowledged by a reply; the device asks again
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.sem <- struct{}{}
	defer func() { <-s.sem }()
	dev, ok := wire.DeviceOf(s.TopicPrefix, m.Topic())
	if !ok || m.Retained() {
		s.log().Warn("message on unexpected topic ignored", "topic", m.Topic(), "retained", m.Retained())
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := wire.DecodeRequest(m.Payload())
	var rep wire.Reply
	if err != nil {
		if req.ID == "" {
			s.log().Warn("unreadable request ignored", "device", dev, "err", err)
			return
		}
		code := wire.ErrBadRequest
		if errors.Is(err, wire.ErrUnsupportedProvider) {
			code = wire.ErrUnsupportedProvider
		}
		rep = wire.Reply{ID: req.ID, Error: code, Msg: err.Error()}
		_ = s.Gate.Audit.Write(Record{Time: time.Now(), Replica: s.Gate.Replica, Device: dev, RequestID: req.ID, Op: string(req.Op), Decision: Refused, Code: string(code), Msg: err.Error()})
	} else {
		rep = s.Gate.Handle(ctx, dev, req)
	}
	if err := s.Publish(ctx, wire.ReplyTopic(s.TopicPrefix, dev), wire.Encode(rep)); err != nil {
		// The device's call times out as unknown and is asked again.
		s.log().Warn("reply not published", "device", dev, "id", req.ID, "err", err)
	}
}

// Publish sends one QoS 1 message and waits for its PUBACK (relay.Publisher).
func (s *Server) Publish(ctx context.Context, topic string, payload []byte) error {
	return mqttclient.Wait(ctx, s.client.Publish(topic, 1, false, payload), ReplyTimeout)
}

// Close disconnects after the requests in flight are answered.
func (s *Server) Close() {
	if s.client == nil {
		return
	}
	s.client.Unsubscribe(wire.RequestFilter(s.TopicPrefix))
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.wg.Wait()
	s.client.Disconnect(500)
}

// NotifyHandler serves POST /notify/<pid>/<provider>: provider
// notifications for orders paygate created. It verifies (and for WeChat
// Pay decrypts) each with the merchant's keys, finds the device from the
// order number's prefix, and forwards the notification unchanged to the
// device's P/pay/notify, as notifyrelay would; the device has it verified
// by paygate again (verify_notify) and confirms it with a query. The
// provider hears success only once the broker has the message.
func (s *Server) NotifyHandler() http.Handler {
	fwd := &relay.Relay{Prefix: s.TopicPrefix, Pub: s, Logger: s.Logger}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Connected() {
			http.Error(w, "broker not connected", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /notify/{pid}/{provider}", func(w http.ResponseWriter, r *http.Request) {
		pid, provider := r.PathValue("pid"), r.PathValue("provider")
		start := time.Now()
		rec := Record{Time: start, Replica: s.Gate.Replica, Op: "notify", PID: pid, Provider: provider}
		fail := func(status int, code wire.Code, msg string) {
			rec.Decision, rec.Code, rec.Msg = Refused, string(code), msg
			rec.TookMS = time.Since(start).Milliseconds()
			_ = s.Gate.Audit.Write(rec)
			s.log().Info("notification refused", "pid", pid, "provider", provider, "status", status, "reason", msg)
			relay.WriteFailure(w, provider, status, msg)
		}
		prov := s.Gate.Accounts[pid][payment.ProviderName(provider)]
		if prov == nil {
			fail(http.StatusNotFound, wire.ErrUnknownMerchant, "no such merchant account")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, relay.DefaultMaxBody))
		if err != nil || len(body) == 0 {
			fail(http.StatusBadRequest, wire.ErrBadRequest, "unreadable or empty body")
			return
		}
		n, err := prov.ParseNotify(r.Context(), r.Header, body)
		if err != nil {
			fail(http.StatusBadRequest, wire.ErrSignatureInvalid, "notification does not verify")
			return
		}
		rec.OutTradeNo, rec.OutRefundNo = n.OutTradeNo, n.OutRefundNo
		dev, ok := s.Gate.Policy.DeviceOf(n.OutTradeNo)
		if !ok {
			// Not one of ours (an order from elsewhere on the account):
			// acknowledged, so the provider stops retrying.
			rec.Decision, rec.Code, rec.Msg = Refused, string(wire.ErrPolicyPrefix), "no device prefix in out_trade_no"
			_ = s.Gate.Audit.Write(rec)
			relay.WriteSuccess(w, provider)
			return
		}
		rec.Device = dev
		if err := fwd.Forward(r.Context(), dev, provider, r.Header, body); err != nil {
			rec.Decision, rec.Code, rec.Msg = Unknown, string(wire.ErrInternal), err.Error()
			_ = s.Gate.Audit.Write(rec)
			relay.WriteFailure(w, provider, http.StatusServiceUnavailable, "broker did not acknowledge")
			return
		}
		rec.Decision = Allowed
		rec.TookMS = time.Since(start).Milliseconds()
		if err := s.Gate.Audit.Write(rec); err != nil {
			s.log().Error("audit log write failed", "err", err)
		}
		relay.WriteSuccess(w, provider)
	})
	return mux
}
