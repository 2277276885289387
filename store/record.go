package store

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Order records are JSON. Schema 1 stored the JSON as it is (about 1.5 KB
// for a typical finished order); schema 2 stores it deflated with a fixed
// dictionary of what every record repeats (field names, states, provider
// names), a few hundred bytes. The first byte tells them apart: '{' is a
// schema-1 record, recordDeflate a schema-2 one. Both are read, so a file
// upgraded from schema 1 needs no rewrite of its history: records change
// form when they are next written (or all at once by `kioskpayd compact`).
//
// The dictionary is part of the format: a record written with it can only
// be read with it. Never change it; a better one needs a new first byte.
const recordDeflate = 0x01

// maxRecord bounds what one record inflates to, so a damaged record (or a
// page of something else read by the salvage) cannot make a reader
// allocate without limit.
const maxRecord = 1 << 20

var recordDict = []byte(`"legs":[{"provider":"alipay","state":"paid","code_url":"https://qr.alipay.com/","scanned":true,` +
	`"total":,"payer_total":,"receipt":,"discount":,"transaction_id":"","paid_at":"","error":""}],` +
	`"refunds":[{"out_refund_no":"","provider":"alipay","amount":,"reason":"","state":"success","refund_id":"","request_id":"","main":true,"attempts":,"created_at":"","updated_at":""}],` +
	`"flags":["amount_mismatch"],"attempts":,"last_error":"","close_reason":"expire","winner":"wxpay","paid_fee":,"refunded_fee":,` +
	`"ack_deadline":"","acked":true,"result":"paid","result_seq":,"expires_at":"","other":,` +
	`{"out_trade_no":"","request_id":"","fingerprint":"","provider":"any","pid":"","total_fee":,"subject":"","type":"","custom":{"` +
	`"expire":300000000000,"state":"delivered","status":1,"close_reason":"","legs":[{"provider":"wxpay","state":"closed","code_url":"weixin://wxpay/bizpayurl?pr=",` +
	`"transitions":[{"from":"creating","to":"pending","at":"","reason":"created"},{"from":"pending","to":"paid","at":"","reason":"paid"},` +
	`{"from":"paid","to":"delivered","at":"","reason":"ack"}],"created_at":"2026-01-01T00:00:00.000000000Z","updated_at":"2026-01-01T00:00:00.000000000Z"`)

var (
	deflaters = sync.Pool{New: func() any {
		w, err := flate.NewWriterDict(io.Discard, flate.BestCompression, recordDict)
		if err != nil {
			panic(err) // only for a bad level
		}
		return w
	}}
	inflaters = sync.Pool{New: func() any { return flate.NewReaderDict(bytes.NewReader(nil), recordDict) }}
)

// encodeOrder is an order's schema-2 record.
func encodeOrder(o Order) ([]byte, error) {
	js, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode order %s: %w", o.OutTradeNo, err)
	}
	var buf bytes.Buffer
	buf.Grow(len(js)/3 + 16)
	buf.WriteByte(recordDeflate)
	w := deflaters.Get().(*flate.Writer)
	defer deflaters.Put(w)
	w.Reset(&buf)
	if _, err := w.Write(js); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// errRecord is a record that is neither form.
var errRecord = errors.New("not an order record")

// decodeOrder reads a record of either schema into o.
func decodeOrder(v []byte, o *Order) error {
	switch {
	case len(v) > 0 && v[0] == '{':
		return json.Unmarshal(v, o)
	case len(v) > 1 && v[0] == recordDeflate:
		js, err := inflate(v[1:])
		if err != nil {
			return err
		}
		return json.Unmarshal(js, o)
	}
	return errRecord
}

func inflate(z []byte) ([]byte, error) {
	r := inflaters.Get().(io.ReadCloser)
	defer inflaters.Put(r)
	if err := r.(flate.Resetter).Reset(bytes.NewReader(z), recordDict); err != nil {
		return nil, err
	}
	js, err := io.ReadAll(io.LimitReader(r, maxRecord+1))
	if err != nil {
		return nil, fmt.Errorf("inflate: %w", err)
	}
	if len(js) > maxRecord {
		return nil, fmt.Errorf("inflate: record over %d bytes", maxRecord)
	}
	return js, nil
}
