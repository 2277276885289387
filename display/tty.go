package display

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/kioskpay/kioskpay/display/termqr"
)

// ttyText renders f as lines of text for a terminal.
func ttyText(f *frame, now time.Time, tx *texts) ([]string, error) {
	var lines []string
	switch f.Kind {
	case Pay:
		var codes []termqr.Code
		for _, c := range f.Codes {
			if len(codes) == 2 {
				break
			}
			codes = append(codes, termqr.Code{Label: tx.provider(c.Provider), Content: c.Content})
		}
		lines = append(lines, tx.PayTitle+"  "+f.Amount.String())
		if s := cleanText(f.Subject); s != "" {
			lines = append(lines, s)
		}
		// Codes side by side with their labels above.
		block, err := termqr.Lines(codes, 0, false)
		if err != nil {
			return nil, err
		}
		lines = append(lines, block...)
		lines = append(lines, tx.TimeLeft+" "+formatCountdown(remaining(f.ExpiresAt, now)))
		if f.OutTradeNo != "" {
			lines = append(lines, tx.Order+" "+cleanText(f.OutTradeNo))
		}
	case Idle:
		lines = append(lines, tx.IdleTitle, tx.IdleHint)
	case Paid:
		lines = append(lines, tx.PaidTitle+"  "+f.Amount.String(), tx.PaidHint)
	case Expired:
		lines = append(lines, tx.ExpiredTitle, tx.ExpiredHint)
	default:
		lines = append(lines, tx.ErrorTitle)
		if m := cleanText(f.Message); m != "" {
			lines = append(lines, m)
		}
		lines = append(lines, tx.ErrorHint)
	}
	return lines, nil
}

// ttyOutput writes screens to a terminal (redrawn in place with ANSI
// cursor control), a regular file (rewritten from the start, so it always
// holds the current screen) or any other writer (one block per new
// screen, no countdown ticks: a log would fill up).
type ttyOutput struct {
	w    io.Writer // set by Config.TTY
	path string
	tx   *texts

	out     io.Writer
	closer  io.Closer
	mode    ttyMode
	lastSeq uint64
	last    string
}

type ttyMode int

const (
	ttyStream ttyMode = iota
	ttyTerminal
	ttyFile
)

func (o *ttyOutput) name() string { return "tty" }

func (o *ttyOutput) ticks() bool { return o.out == nil || o.mode != ttyStream }

func (o *ttyOutput) open() error {
	if o.w != nil {
		o.out = o.w
	} else {
		wc, err := openOut(o.path)
		if err != nil {
			return fmt.Errorf("tty output: %w", err)
		}
		o.out, o.closer = wc, wc
		if nc, ok := wc.(nopCloser); ok {
			o.out = nc.Writer
		}
	}
	o.mode = ttyStream
	if f, ok := o.out.(*os.File); ok {
		if st, err := f.Stat(); err == nil {
			switch {
			case st.Mode()&os.ModeCharDevice != 0:
				o.mode = ttyTerminal
			case st.Mode().IsRegular():
				o.mode = ttyFile
			}
		}
	}
	o.last = ""
	return nil
}

func (o *ttyOutput) draw(f *frame, now time.Time) error {
	if o.out == nil {
		if err := o.open(); err != nil {
			return err
		}
	}
	if o.mode == ttyStream && f.seq == o.lastSeq && o.last != "" {
		return nil
	}
	lines, rerr := ttyText(f, now, o.tx)
	if rerr != nil {
		lines = []string{o.tx.ErrorTitle, rerr.Error()}
	}
	text := strings.Join(lines, "\n") + "\n"
	if text == o.last {
		return rerr
	}
	var err error
	switch o.mode {
	case ttyTerminal:
		// Home, overwrite each line and clear its rest, clear below: no
		// flicker from clearing the whole screen every second.
		var b strings.Builder
		b.WriteString("\x1b[H")
		for _, l := range lines {
			b.WriteString(l)
			b.WriteString("\x1b[K\n")
		}
		b.WriteString("\x1b[J")
		_, err = io.WriteString(o.out, b.String())
	case ttyFile:
		fl := o.out.(*os.File)
		if _, err = fl.WriteAt([]byte(text), 0); err == nil {
			err = fl.Truncate(int64(len(text)))
		}
	default:
		_, err = io.WriteString(o.out, text+"\n")
	}
	if err != nil {
		o.close()
		return fmt.Errorf("tty output: %w", err)
	}
	o.last, o.lastSeq = text, f.seq
	return rerr
}

func (o *ttyOutput) close() error {
	var err error
	if o.closer != nil {
		err = o.closer.Close()
	}
	o.out, o.closer, o.last = nil, nil, ""
	return err
}
