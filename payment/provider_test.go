package payment

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestIsUnknown(t *testing.T) {
	rej := &RejectedError{Provider: WxPay, Op: "query", Code: "ORDER_NOT_EXIST"}
	for _, tt := range []struct {
		name    string
		err     error
		unknown bool
	}{
		{"nil", nil, false},
		{"rejection", rej, false},
		{"wrapped rejection", fmt.Errorf("query order x: %w", rej), false},
		{"network", errors.New("dial tcp: connection refused"), true},
		{"timeout", context.DeadlineExceeded, true},
		{"rate limit", fmt.Errorf("query: %w", ErrRateLimited), true},
	} {
		if got := IsUnknown(tt.err); got != tt.unknown {
			t.Errorf("%s: IsUnknown = %v, want %v", tt.name, got, tt.unknown)
		}
	}
	if !IsRejected(fmt.Errorf("x: %w", rej), "ORDER_NOT_EXIST") || IsRejected(rej, "OTHER") || IsRejected(errors.New("x"), "") {
		t.Error("IsRejected matches wrongly")
	}
}

func TestStateWasPaid(t *testing.T) {
	for s := StateUnknown; s <= StateClosed; s++ {
		want := s == StatePaid || s == StateRefunded
		if s.WasPaid() != want {
			t.Errorf("%v.WasPaid() = %v", s, !want)
		}
		if s.String() == "" {
			t.Errorf("state %d has no name", s)
		}
	}
}

func TestEnumStrings(t *testing.T) {
	for _, tt := range []struct {
		v    fmt.Stringer
		want string
	}{
		{StateUnknown, "unknown"},
		{StateClosed, "closed"},
		{State(-1), "State(-1)"},
		{State(99), "State(99)"},
		{RefundProcessing, "processing"},
		{RefundAbnormal, "abnormal"},
		{RefundState(6), "RefundState(6)"},
	} {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}
