package contract

import (
	"regexp"
	"strings"

	"github.com/kioskpay/kioskpay/payment"
)

var (
	deviceIDRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	pidRE       = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	orderTypeRE = regexp.MustCompile(`^[a-z0-9_]{1,32}$`)
)

// ValidDeviceID reports whether s can be a device_id: 1 to 64 of
// A-Z a-z 0-9 _ -, so that it is one topic level and one URL path segment.
func ValidDeviceID(s string) bool { return deviceIDRE.MatchString(s) }

// ValidPID reports whether s can name a merchant account ("pid").
func ValidPID(s string) bool { return pidRE.MatchString(s) }

// ValidOrderType reports whether s can be an order type ("type").
func ValidOrderType(s string) bool { return orderTypeRE.MatchString(s) }

// NotifyURL is the notify_url an order at provider p carries:
// <base>/notify/<device_id>/<provider>, the path notifyrelay serves (relay's
// "POST /notify/{device}/{provider}"); "" when base is "" (notifications
// off, the daemon polls).
func NotifyURL(base, deviceID string, p payment.ProviderName) string {
	if base == "" {
		return ""
	}
	return strings.TrimRight(base, "/") + "/notify/" + deviceID + "/" + string(p)
}
