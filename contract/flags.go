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
	// FlagUnlockInterrupted: a local unlock driver's action was cut off
	// (crash, stop, device error) after it may have reached the machine
	// and cannot be resumed; the order stays paid, neither refunded nor
	// run again, until a person acks or refunds it (docs/contract.md §4.3).
	FlagUnlockInterrupted = "unlock_interrupted"
)

// Reasons of the events of a local unlock driver (docs/contract.md §4.3).
const (
	// ReasonUnlockStarted: the driver's first step that may reach the
	// machine is committed (from = to = "paid").
	ReasonUnlockStarted = "unlock_started"
	// ReasonUnlockDelivered is the paid → delivered transition's reason.
	ReasonUnlockDelivered = "unlock_delivered"
	// ReasonUnlockNotDelivered starts the reason of the transition out of
	// paid when the driver did not deliver ("unlock_not_delivered: exit
	// status 3").
	ReasonUnlockNotDelivered = "unlock_not_delivered"
)

// Flags lists every flag, for validating filters.
var Flags = []string{FlagAmountMismatch, FlagLatePayment, FlagDuplicatePayment, FlagNoAck, FlagLateAck,
	FlagRefundClosed, FlagRefundAbnormal, FlagRefundStuck, FlagCloseStuck, FlagRefundedOnClose, FlagRefundedAtProvider,
	FlagUnlockInterrupted}

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
	// StatusUnlockInterrupted: some paid order carries
	// FlagUnlockInterrupted and waits for a person.
	StatusUnlockInterrupted = "unlock_interrupted"
)
