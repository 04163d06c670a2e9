package privileged

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"time"
)

// NewAuditLogger returns the logger the helper's audit trail expects: one JSON object
// per line on w. Each call to the helper, refused or not, produces exactly one line:
//
//	{"time":"…","level":"INFO","msg":"call","peer_uid":1000,"peer_pid":4242,
//	 "op":"CreateTap","args":{"name":"tap-pool-3","bridge":"banger0"},
//	 "result":"ok","duration_us":1834}
//
// A failed or refused call has result set to its error code (invalid, forbidden,
// unknown_op, failed) and error set to the message the caller got.
func NewAuditLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// maxAuditBody bounds how much of an undecodable body the audit line quotes.
const maxAuditBody = 512

// auditRecord collects one call's audit line while the call is handled.
type auditRecord struct {
	peer peerCred
	op   string
	// args is the decoded request; nil when the body was not read or not decoded.
	args any
	// rawBody is quoted (truncated) when the body could not be decoded, so a
	// malformed call still leaves a trace of what was sent.
	rawBody []byte
	// err is nil for success.
	err *Error
}

// writeAudit emits rec as one line on l.
func writeAudit(l *slog.Logger, rec auditRecord, d time.Duration) {
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs,
		slog.Int("peer_uid", rec.peer.UID),
		slog.Int("peer_pid", rec.peer.PID),
		slog.String("op", rec.op),
	)
	if rec.args != nil {
		attrs = append(attrs, slog.Any("args", rec.args))
	} else if rec.rawBody != nil {
		attrs = append(attrs, slog.String("body", quoteBody(rec.rawBody)))
	}
	if rec.err == nil {
		attrs = append(attrs, slog.String("result", "ok"))
	} else {
		attrs = append(attrs, slog.String("result", rec.err.Code), slog.String("error", rec.err.Message))
	}
	attrs = append(attrs, slog.Int64("duration_us", d.Microseconds()))
	l.LogAttrs(context.Background(), slog.LevelInfo, "call", attrs...)
}

// quoteBody returns at most maxAuditBody bytes of b as valid UTF-8.
func quoteBody(b []byte) string {
	suffix := ""
	if len(b) > maxAuditBody {
		b, suffix = b[:maxAuditBody], "…(truncated)"
	}
	return strings.ToValidUTF8(string(b), "\uFFFD") + suffix
}
