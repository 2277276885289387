package mqttclient

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"

	"github.com/kioskpay/kioskpay/mqttclient/brokerurl"
)

// ClientFlags are the broker flags every command-line tool takes (kioskctl,
// notifyrelay, fleetsim): -broker, -username, -password-file, -ca-file,
// -cert-file, -key-file.
type ClientFlags struct {
	// Brokers is one URL, or several separated by commas (the nodes of a
	// cluster, tried in order).
	Brokers      string
	Username     string
	PasswordFile string
	CAFile       string
	CertFile     string
	KeyFile      string
}

// FlagError is a mistake in the flags themselves (a usage error), as
// opposed to a file that cannot be read.
type FlagError struct{ Msg string }

func (e *FlagError) Error() string { return e.Msg }

// Resolve checks the flags and reads the files they name: the broker list,
// the password (trimmed: editors add newlines), and the TLS configuration
// (nil for plain brokers; the server name is checked per broker by
// Brokers.Apply).
func (f ClientFlags) Resolve() (urls []string, password string, tc *tls.Config, err error) {
	urls, err = brokerurl.Split(f.Brokers)
	if err != nil {
		return nil, "", nil, &FlagError{fmt.Sprintf("-broker %q: %v (want a URL such as tcp://127.0.0.1:1883 or ssl://broker:8883, or several separated by commas)", f.Brokers, err)}
	}
	isTLS, _ := brokerurl.CheckList(urls)
	switch {
	case !isTLS && (f.CAFile != "" || f.CertFile != "" || f.KeyFile != ""):
		return nil, "", nil, &FlagError{fmt.Sprintf("TLS files given but -broker %s is not a TLS URL: use ssl://host:8883 or wss://", f.Brokers)}
	case (f.CertFile == "") != (f.KeyFile == ""):
		return nil, "", nil, &FlagError{"mutual TLS needs both -cert-file and -key-file"}
	case f.PasswordFile != "" && f.Username == "":
		return nil, "", nil, &FlagError{"-password-file needs -username"}
	}
	if f.PasswordFile != "" {
		b, err := os.ReadFile(f.PasswordFile)
		if err != nil {
			return nil, "", nil, fmt.Errorf("read -password-file: %w", err)
		}
		password = strings.TrimSpace(string(b))
	}
	if isTLS {
		if tc, err = TLSConfig(f.CAFile, f.CertFile, f.KeyFile); err != nil {
			return nil, "", nil, fmt.Errorf("-ca-file/-cert-file/-key-file: %w", err)
		}
	}
	return urls, password, tc, nil
}
