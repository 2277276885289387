package contract

// Flags recorded on orders (and named in events) for conditions a human
// may need to look at. kioskctl orders -flag filters on them.
const (
	FlagAmountMismatch     = "amount_mismatch"
	FlagLatePayment        = "late_payment"
	FlagDuplicatePayment   = "duplicate_payment"
	FlagNoAck              = "no_ack"
	FlagLateAck            = "late_ack"
	FlagRefundClosed       = "refund_closed"
	FlagRefundAbnormal     = "refund_abnormal"
	FlagRefundStuck        = "refund_stuck"
	FlagCloseStuck         = "close_stuck"
	FlagRefundedOnClose    = "refunded_on_close"
	FlagRefundedAtProvider = "refunded_at_provider"
)

// Flags lists every flag, for validating filters.
var Flags = []string{FlagAmountMismatch, FlagLatePayment, FlagDuplicatePayment, FlagNoAck, FlagLateAck,
	FlagRefundClosed, FlagRefundAbnormal, FlagRefundStuck, FlagCloseStuck, FlagRefundedOnClose, FlagRefundedAtProvider}

// Device-wide conditions, named in the retained status's "flags" and in
// events that concern no order (out_trade_no "", from = to = ""), whose
// reason starts with the name.
const (
	// StatusStorageFull: the store's file system is full; new orders are
	// refused with STORAGE_FULL until space returns (docs/contract.md §4.6).
	StatusStorageFull = "storage_full"
	// EventStorageOK ends a storage_full condition.
	EventStorageOK = "storage_ok"
	// StatusStoreRecovered: the daemon found its store damaged, moved it
	// aside and serves from what it salvaged (docs/contract.md §4.4). The
	// flag stays until an operator clears it (`kioskpayd recover -clear`),
	// so that a restart does not hide it.
	StatusStoreRecovered = "store_recovered"
)
