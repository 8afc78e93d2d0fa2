//! What both protocols share about one request: its options, the tier
//! header, and the checks of a decrypted answer.

use nomyo_core::{SecretBuf, SecurityTier};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{Error, Result};
use crate::types::{ChatCompletion, ChatRequest};

pub(crate) const X_SECURITY_TIER: HeaderName =
    HeaderName::from_static(nomyo_core::tier::HEADER_SECURITY_TIER);

/// Per-request options.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RequestOptions {
    /// Overrides the client's security tier for this request.
    pub security_tier: Option<SecurityTier>,
    /// Sent as `X-Request-Id` (the server keeps it in its access log when it
    /// is at most 128 characters of `[A-Za-z0-9._-]`).
    pub request_id: Option<String>,
}

impl RequestOptions {
    /// Sets the security tier for this request.
    pub fn security_tier(mut self, tier: SecurityTier) -> Self {
        self.security_tier = Some(tier);
        self
    }

    /// Sets the request id sent as `X-Request-Id` (one id from the caller
    /// through the server's logs).
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Adds this request's headers to the client's: its tier, when it
    /// overrides the client's, and its `X-Request-Id`, when its id is one.
    pub(crate) fn add_headers(&self, headers: &mut HeaderMap) {
        if let Some(tier) = self.security_tier {
            headers.insert(X_SECURITY_TIER, HeaderValue::from_static(tier.as_str()));
        }
        if let Some(id) = self
            .request_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            headers.insert(HeaderName::from_static(nomyo_core::HEADER_REQUEST_ID), id);
        }
    }
}

/// Whether a served tier (from the sealed `_metadata`) is at least the one
/// asked for, when more than `standard` was asked for.
pub(crate) fn check_served_tier(
    requested: Option<SecurityTier>,
    served: Option<&str>,
) -> Result<()> {
    let Some(requested) = requested.filter(|t| *t > SecurityTier::Standard) else {
        return Ok(());
    };
    let served = served.and_then(|s| s.parse::<SecurityTier>().ok());
    match served {
        Some(s) if s >= requested => Ok(()),
        _ => Err(Error::TierDowngrade { requested, served }),
    }
}

/// A request serialised into locked memory, to be sealed.
pub(crate) fn serialise(request: &ChatRequest) -> Result<SecretBuf> {
    let mut plaintext = SecretBuf::with_capacity(4096);
    serde_json::to_writer(&mut plaintext, request)
        .map_err(|_| Error::InvalidInput("the request cannot be serialised as JSON".into()))?;
    Ok(plaintext)
}

/// Whether a request asks for a streamed answer (`"stream": true`), in
/// its field or, for a request built with `with("stream", ...)`, in
/// `extra`.
pub(crate) fn wants_stream(request: &ChatRequest) -> bool {
    request.stream == Some(true)
        || request.extra.get("stream").and_then(|v| v.as_bool()) == Some(true)
}

/// Parses a decrypted answer (either protocol) as a chat completion.
pub(crate) fn parse_completion(plaintext: &[u8]) -> Result<ChatCompletion> {
    serde_json::from_slice(plaintext).map_err(|e| {
        // Never serde's message: it can quote the decrypted text.
        Error::InvalidResponse(format!(
            "the decrypted answer is not a chat completion (JSON error at line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tier_tests {
    use super::*;

    #[test]
    fn a_lower_or_missing_served_tier_is_refused_when_more_than_standard_was_asked() {
        use SecurityTier::*;
        assert!(check_served_tier(None, None).is_ok());
        assert!(check_served_tier(Some(Standard), None).is_ok());
        assert!(check_served_tier(Some(Standard), Some("standard")).is_ok());
        assert!(check_served_tier(Some(High), Some("high")).is_ok());
        assert!(check_served_tier(Some(High), Some("maximum")).is_ok());
        assert!(check_served_tier(Some(Maximum), Some("maximum")).is_ok());
        for (asked, served) in [
            (High, Some("standard")),
            (Maximum, Some("high")),
            (Maximum, None),
            (High, Some("HIGH; maximum")),
        ] {
            let err = check_served_tier(Some(asked), served).unwrap_err();
            assert!(err.is_security(), "{asked:?} {served:?}");
            assert!(matches!(err, Error::TierDowngrade { .. }));
        }
    }
}
