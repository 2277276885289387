package mqttclient

import (
	"errors"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// ConnectError rewords an error from paho's Connect for a person: paho
// reports a network failure as "network Error : dial tcp …" and a refused
// login as "not Authorized". The cause stays wrapped, so errors.Is still
// matches paho's sentinel errors and the net package's.
func ConnectError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, packets.ErrorNetworkError) {
		// paho joins its sentinel and the cause with two %w verbs.
		if m, ok := err.(interface{ Unwrap() []error }); ok {
			for _, cause := range m.Unwrap() {
				if cause != nil && !errors.Is(cause, packets.ErrorNetworkError) {
					return &connectError{msg: "cannot reach the broker: " + cause.Error(), err: err}
				}
			}
		}
		return &connectError{msg: "cannot reach the broker", err: err}
	}
	for sentinel, msg := range connackWords {
		if errors.Is(err, sentinel) {
			return &connectError{msg: msg, err: err}
		}
	}
	return err
}

// connackWords are the CONNACK refusals of MQTT 3.1.1 (§3.2.2.3), said the
// way an operator fixes them.
var connackWords = map[error]string{
	packets.ErrorRefusedBadProtocolVersion:    "the broker refused the connection: it does not accept MQTT 3.1.1",
	packets.ErrorRefusedIDRejected:            "the broker rejected the client id",
	packets.ErrorRefusedServerUnavailable:     "the broker refused the connection: server unavailable",
	packets.ErrorRefusedBadUsernameOrPassword: "the broker refused the user name or password",
	packets.ErrorRefusedNotAuthorised:         "the broker refused the login (not authorised): check the user name, password file or client certificate",
	packets.ErrorProtocolViolation:            "the broker closed the connection: protocol violation",
}

type connectError struct {
	msg string
	err error
}

func (e *connectError) Error() string { return e.msg }
func (e *connectError) Unwrap() error { return e.err }
