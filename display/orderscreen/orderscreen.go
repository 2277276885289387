// Package orderscreen shows the engine's orders on the display: Screens is
// the device.Observer the daemon gives the engine, and screenFor is the one
// place that decides which screen an order's state gets.
package orderscreen

import (
	"sync"
	"time"

	"github.com/kioskpay/kioskpay/device"
	"github.com/kioskpay/kioskpay/display"
	"github.com/kioskpay/kioskpay/store"
)

// outcomeScreenFor is how long a paid, expired or error screen stays up
// before the display returns to idle.
const outcomeScreenFor = 10 * time.Second

// Screens turns the engine's order views into display screens. It never
// blocks: display.Show does not, and the idle timer runs on its own.
type Screens struct {
	d *display.Display

	mu      sync.Mutex
	current string // out_trade_no on screen
	idle    *time.Timer
}

// New returns the observer that shows orders on d.
func New(d *display.Display) *Screens { return &Screens{d: d} }

// OrderChanged implements device.Observer.
func (s *Screens) OrderChanged(v device.View) {
	scr, show, outcome := screenFor(v)
	s.mu.Lock()
	defer s.mu.Unlock()
	// An update about an order that is no longer on screen (a superseded
	// order being closed, a late refund) must not replace the current one.
	if !show || (s.current != "" && v.OutTradeNo != s.current && scr.Kind != display.Pay) {
		return
	}
	if s.idle != nil {
		s.idle.Stop()
		s.idle = nil
	}
	s.current = v.OutTradeNo
	s.d.Show(scr)
	if outcome {
		no := v.OutTradeNo
		s.idle = time.AfterFunc(outcomeScreenFor, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.current == no {
				s.current = ""
				s.d.Show(display.Screen{Kind: display.Idle})
			}
		})
	}
}

// screenFor maps an order view to a screen. show is false for states the
// customer need not see; outcome marks screens that time out to idle.
func screenFor(v device.View) (scr display.Screen, show, outcome bool) {
	scr = display.Screen{Amount: v.Total, Subject: v.Subject, ExpiresAt: v.ExpiresAt, OutTradeNo: v.OutTradeNo}
	switch store.State(v.State) {
	case store.Pending:
		if len(v.Codes) == 0 {
			return scr, false, false
		}
		scr.Kind = display.Pay
		for _, c := range v.Codes {
			scr.Codes = append(scr.Codes, display.Code{Provider: c.Provider, Content: c.CodeURL})
		}
		return scr, true, false
	case store.Paid, store.Delivered, store.Held:
		scr.Kind = display.Paid
		return scr, true, true
	case store.Expired:
		scr.Kind = display.Expired
		return scr, true, true
	case store.Cancelled:
		scr.Kind = display.Idle
		return scr, true, false
	case store.Failed, store.Refunding, store.Refunded, store.RefundFailed:
		scr.Kind = display.Error
		scr.Message = v.Reason
		return scr, true, true
	}
	return scr, false, false
}
