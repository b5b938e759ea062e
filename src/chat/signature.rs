//! What the signed webhooks of every platform share: the two headers, a
//! timestamp inside a replay window, and one coarse refusal (the caller
//! answers 401 for all of them). Each adapter checks its own signature.

use axum::http::HeaderMap;

/// The replay window, as Slack and Discord both use it.
pub const WINDOW_SECS: i64 = 300;

/// Why a request was refused. Deliberately coarse: the caller answers 401 for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing signature or timestamp header")]
    MissingHeader,
    #[error("timestamp is not a number")]
    BadTimestamp,
    #[error("timestamp outside the replay window")]
    Stale,
    #[error("signature does not match")]
    BadSignature,
}

/// The timestamp and signature headers, as sent, once the timestamp is
/// within [`WINDOW_SECS`] of `now` (Unix seconds).
pub fn fresh<'h>(
    headers: &'h HeaderMap,
    timestamp_header: &str,
    signature_header: &str,
    now: i64,
) -> Result<(&'h str, &'h str), VerifyError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) = (header(timestamp_header), header(signature_header)) else {
        return Err(VerifyError::MissingHeader);
    };
    let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    if now.abs_diff(ts) > WINDOW_SECS as u64 {
        return Err(VerifyError::Stale);
    }
    Ok((timestamp, signature))
}
