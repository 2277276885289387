// Package mqttclient is the MQTT client set-up every program shares: the
// daemon's link, kioskctl, notifyrelay and fleetsim. It checks broker lists
// (failover between the nodes of a cluster, never TLS and plain mixed),
// builds the TLS and mutual-TLS configuration, reads the broker flags of the
// command-line tools (password file included), makes paho's client options
// and waits on paho's tokens with a bound. Each program then adds only its
// own session policy: the link's persistent session and manual
// acknowledgements, kioskctl's one-shot clean session, the relay's
// background reconnection.
//
// It knows nothing of topics or payloads (those are contract/), so a tool
// that only talks to a broker does not link the daemon's session.
package mqttclient

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/mqttclient/brokerurl"
)

// Config is how one client reaches the brokers.
type Config struct {
	// Brokers are tried in order on every (re)connect.
	Brokers  *Brokers
	ClientID string
	Username string
	Password string
	// TLS is used for ssl:// and wss:// brokers; nil means the system
	// roots.
	TLS *tls.Config
	// ConnectTimeout bounds one connection attempt to one broker; paho
	// gives each broker of the list its own (default 10s).
	ConnectTimeout time.Duration
	// WriteTimeout bounds one write to the socket (0: none).
	WriteTimeout time.Duration
	// KeepAlive is the MQTT keepalive (0: paho's 30s).
	KeepAlive time.Duration
}

// Options returns paho client options for c: MQTT 3.1.1 (no silent fallback
// to 3.1), the credentials, the brokers with a TLS server name checked per
// broker. The caller adds its session policy and handlers.
func (c Config) Options() *mqtt.ClientOptions {
	o := mqtt.NewClientOptions().
		SetClientID(c.ClientID).
		SetUsername(c.Username).
		SetPassword(c.Password).
		SetProtocolVersion(4).
		SetConnectTimeout(cmp.Or(c.ConnectTimeout, 10*time.Second)).
		SetWriteTimeout(c.WriteTimeout)
	if c.KeepAlive > 0 {
		o.SetKeepAlive(c.KeepAlive)
	}
	tc := c.TLS
	if tc == nil && c.Brokers.isTLS() {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	c.Brokers.Apply(o, tc)
	return o
}

// ConnectWait bounds a whole Connect: paho gives each broker of the list the
// connect timeout in turn.
func (c Config) ConnectWait() time.Duration {
	return time.Duration(c.Brokers.Len())*cmp.Or(c.ConnectTimeout, 10*time.Second) + time.Second
}

// Wait waits for a paho token at most d and never past ctx. Token.Wait
// without a timeout can block forever on a dead connection (paho issues
// #613, #598), so nothing in kioskpay waits on a token any other way.
func Wait(ctx context.Context, t mqtt.Token, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("timed out after %s", d)
	}
}

// TLSConfig builds the client TLS configuration from PEM files: caFile
// (empty = the system roots) verifies the broker, certFile and keyFile
// (both or neither) are the device's certificate for mutual TLS.
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificates in it", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("client certificate and key must be given together")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			// The error text of LoadX509KeyPair never includes key bytes.
			return nil, fmt.Errorf("load client certificate %s / key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Files are the files of a broker login: the password and, for TLS
// brokers, the CA bundle and the client certificate and key (mutual TLS).
type Files struct {
	PasswordFile, CAFile, CertFile, KeyFile string
}

// FileError is a login file that could not be used. Key says which, as
// the [mqtt] table names it ("password_file", "ca_file", "cert_file").
type FileError struct {
	Key string
	Err error
}

func (e *FileError) Error() string { return e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// Read reads the files of a login to urls: the password (surrounding
// white space trimmed: editors add a newline) and, when the brokers use
// TLS, the TLS configuration. Errors are *FileError; they name files,
// never their content.
func (f Files) Read(urls []string) (password string, tc *tls.Config, err error) {
	if f.PasswordFile != "" {
		b, err := os.ReadFile(f.PasswordFile)
		if err != nil {
			return "", nil, &FileError{"password_file", fmt.Errorf("read %s: %w", f.PasswordFile, errors.Unwrap(err))}
		}
		if password = strings.TrimSpace(string(b)); password == "" {
			return "", nil, &FileError{"password_file", fmt.Errorf("file %s is empty", f.PasswordFile)}
		}
	}
	if isTLS, _ := brokerurl.CheckList(urls); isTLS {
		if tc, err = TLSConfig(f.CAFile, f.CertFile, f.KeyFile); err != nil {
			key := "ca_file"
			if f.CertFile != "" && !strings.Contains(err.Error(), "CA file") {
				key = "cert_file"
			}
			return "", nil, &FileError{key, err}
		}
	}
	return password, tc, nil
}
