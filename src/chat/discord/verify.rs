//! Discord interaction signatures: Ed25519 over `{timestamp}{raw body}`
//! with the application's public key (`DISCORD_PUBLIC_KEY`, hex), sent as
//! `X-Signature-Ed25519` (hex) and `X-Signature-Timestamp` (Unix seconds).
//! Checked over the raw bytes before anything is parsed, with the same
//! 300 s replay window as Slack's. Discord's own check of an endpoint sends
//! invalid signatures on purpose and expects 401.

use axum::http::HeaderMap;
use ring::signature::{UnparsedPublicKey, ED25519};

pub const SIGNATURE_HEADER: &str = "x-signature-ed25519";
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";
pub use crate::chat::signature::{VerifyError, WINDOW_SECS};

/// The application's public key.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: [u8; 32],
}

impl Verifier {
    /// From the 64 hex characters the Discord developer portal shows as the
    /// application's public key.
    pub fn from_hex(public_key: &str) -> Result<Verifier, String> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(public_key.trim(), &mut key).map_err(|_| {
            "DISCORD_PUBLIC_KEY must be the application's public key: 64 hex characters, as the developer portal shows it"
                .to_string()
        })?;
        Ok(Verifier { key })
    }

    /// Checks a request's headers and raw body at time `now` (Unix seconds).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        let (timestamp, signature) = crate::chat::signature::fresh(headers, TIMESTAMP_HEADER, SIGNATURE_HEADER, now)?;
        let mut given = [0u8; 64];
        hex::decode_to_slice(signature, &mut given).map_err(|_| VerifyError::BadSignature)?;
        // The signed message is the timestamp exactly as sent, then the body.
        let mut message = Vec::with_capacity(timestamp.len() + body.len());
        message.extend_from_slice(timestamp.as_bytes());
        message.extend_from_slice(body);
        UnparsedPublicKey::new(&ED25519, &self.key).verify(&message, &given).map_err(|_| VerifyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    /// RFC 8032's first test vector: this seed and its public key.
    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn signed(timestamp: &str, body: &[u8]) -> HeaderMap {
        let pair = Ed25519KeyPair::from_seed_unchecked(&hex::decode(SEED).unwrap()).unwrap();
        assert_eq!(hex::encode(pair.public_key().as_ref()), PUBLIC);
        let mut message = timestamp.as_bytes().to_vec();
        message.extend_from_slice(body);
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, hex::encode(pair.sign(&message).as_ref()).parse().unwrap());
        headers.insert(TIMESTAMP_HEADER, timestamp.parse().unwrap());
        headers
    }

    #[test]
    fn only_an_unaltered_fresh_request_signed_by_the_application_key_passes() {
        let verifier = Verifier::from_hex(PUBLIC).unwrap();
        let body = br#"{"type":1,"id":"1"}"#;
        let now = 1_764_590_400;
        let headers = signed(&now.to_string(), body);
        assert_eq!(verifier.verify(&headers, body, now), Ok(()));
        assert_eq!(verifier.verify(&headers, br#"{"type":2,"id":"1"}"#, now), Err(VerifyError::BadSignature));
        assert_eq!(verifier.verify(&headers, body, now + WINDOW_SECS + 1), Err(VerifyError::Stale));
        // The timestamp is part of what is signed.
        let mut moved = headers.clone();
        moved.insert(TIMESTAMP_HEADER, (now + 1).to_string().parse().unwrap());
        assert_eq!(verifier.verify(&moved, body, now), Err(VerifyError::BadSignature));
        let mut garbled = headers.clone();
        garbled.insert(SIGNATURE_HEADER, "zz".parse().unwrap());
        assert_eq!(verifier.verify(&garbled, body, now), Err(VerifyError::BadSignature));
        assert_eq!(verifier.verify(&HeaderMap::new(), body, now), Err(VerifyError::MissingHeader));
        // An absurd timestamp is stale, not an overflow.
        let mut absurd = headers.clone();
        absurd.insert(TIMESTAMP_HEADER, i64::MIN.to_string().parse().unwrap());
        assert_eq!(verifier.verify(&absurd, body, now), Err(VerifyError::Stale));
        let other = Verifier::from_hex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c").unwrap();
        assert_eq!(other.verify(&headers, body, now), Err(VerifyError::BadSignature));
        assert!(Verifier::from_hex("abc").unwrap_err().contains("64 hex"));
    }
}
