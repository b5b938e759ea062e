//! Signed checkpoints: the chain's head, signed with a key that does not live
//! in the data directory, and published somewhere the data directory's owner
//! cannot rewrite (a chat channel, a file elsewhere, a log line a SIEM
//! collects). The hash chain alone cannot stop someone who can write the
//! store from rewriting all of it consistently; a checkpoint of record N fixes
//! records 1..N, because record N's hash commits to every record before it.
//! `opsbot audit verify --checkpoints FILE` checks that the trail still
//! extends every checkpoint in FILE.
//!
//! A checkpoint is one JSON object (found anywhere in a line, so a chat
//! export or a log file can be checked as it is, also when a JSON log
//! pipeline or a chat export has escaped it inside a string):
//! `{"opsbot_checkpoint":1,"trail":"…","seq":N,"hash":"…","at":"RFC 3339","key":"ed25519 public key, hex","sig":"hex"}`.
//! `trail` names the trail: the hash of its record 1, so two trails signed
//! with one key (staging and production, a restored copy) are told apart.
//! The signature is Ed25519 over
//! `opsbot-audit-checkpoint/v1\n{trail}\n{seq}\n{hash}\n{at}`.

use super::chain::Head;
use chrono::{DateTime, SecondsFormat, Utc};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

const DOMAIN: &str = "opsbot-audit-checkpoint/v1";
/// Marks a checkpoint object inside a line.
const MARK: &str = "{\"opsbot_checkpoint\":";
/// The mark's name inside a JSON string, escaped once or more (a JSON log
/// line, a chat export).
const ESCAPED_NAME: &str = "opsbot_checkpoint\\";

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub opsbot_checkpoint: u8,
    /// The hash of the trail's record 1.
    pub trail: String,
    pub seq: u64,
    pub hash: String,
    pub at: String,
    /// The signer's Ed25519 public key, hex.
    pub key: String,
    pub sig: String,
}

fn message(trail: &str, seq: u64, hash: &str, at: &str) -> Vec<u8> {
    format!("{DOMAIN}\n{trail}\n{seq}\n{hash}\n{at}").into_bytes()
}

impl Checkpoint {
    /// The one-line JSON form that is published.
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("checkpoint serialises")
    }

    /// Checks the signature, and that the signer is one of `trusted`.
    pub fn check_signature(&self, trusted: &[PublicKey]) -> Result<(), String> {
        let key = PublicKey::parse(&self.key).map_err(|e| format!("its key: {e}"))?;
        if !trusted.contains(&key) {
            return Err(format!(
                "it is signed by key {}…, which is not a trusted key",
                &self.key[..16.min(self.key.len())]
            ));
        }
        let sig = hex::decode(&self.sig).map_err(|_| "its signature is not hex".to_string())?;
        UnparsedPublicKey::new(&ED25519, key.0)
            .verify(&message(&self.trail, self.seq, &self.hash, &self.at), &sig)
            .map_err(|_| "its signature does not verify (the checkpoint was altered)".to_string())
    }
}

/// An Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key)
            .map_err(|_| "an Ed25519 public key is 64 hex characters".to_string())?;
        Ok(PublicKey(key))
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The signing key. Never stored in the data directory, never logged.
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer(public key {})", self.public().hex())
    }
}

impl Signer {
    /// From a 32-byte Ed25519 seed written as 64 hex characters
    /// (`OPSBOT_AUDIT_KEY`, or the contents of the key file).
    pub fn from_seed_hex(text: &str) -> Result<Signer, String> {
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| {
            "the audit key must be 64 hex characters (a 32-byte Ed25519 seed); `opsbot audit keygen` makes one"
                .to_string()
        })?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| "the audit key is not a usable Ed25519 seed".to_string())?;
        Ok(Signer { pair })
    }

    /// A fresh random seed, as hex (for `opsbot audit keygen`).
    pub fn generate_seed_hex() -> Result<String, String> {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut seed).map_err(|_| "no system randomness".to_string())?;
        Ok(hex::encode(seed))
    }

    pub fn public(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(key)
    }

    /// Signs `head` of the trail whose record 1 has the hash `trail`.
    pub fn sign(&self, trail: &str, head: &Head, at: DateTime<Utc>) -> Checkpoint {
        let at = at.to_rfc3339_opts(SecondsFormat::Secs, true);
        let sig = self.pair.sign(&message(trail, head.seq, &head.hash, &at));
        Checkpoint {
            opsbot_checkpoint: 1,
            trail: trail.to_string(),
            seq: head.seq,
            hash: head.hash.clone(),
            at,
            key: self.public().hex(),
            sig: hex::encode(sig.as_ref()),
        }
    }
}

/// How many levels of JSON string escaping are looked through (a JSON log
/// line inside a container runtime's JSON log inside a chat export).
const MAX_ESCAPING: usize = 4;

/// Every checkpoint object in `text`, with its line number: every one in
/// each line (a one-line JSON dump of a channel holds many), anywhere in
/// it, and inside JSON strings escaped up to [`MAX_ESCAPING`] times. Lines
/// without one are skipped; a damaged one is reported (and does not hide
/// the others on its line).
pub fn find_all(text: &str) -> Vec<(usize, Result<Checkpoint, String>)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if !line.contains("opsbot_checkpoint") {
            continue;
        }
        // Unescaping leaves an unescaped object as it was, so one found at
        // two levels is the same object: keep each once.
        let mut seen = std::collections::HashSet::new();
        let mut level = std::borrow::Cow::Borrowed(line);
        for _ in 0..=MAX_ESCAPING {
            for (at, _) in level.match_indices(MARK) {
                let rest = &level[at..];
                let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Checkpoint>();
                let (key, parsed) = match stream.next() {
                    // The whole object is the key: a forged copy that keeps
                    // the real signature must not hide the real one.
                    Some(Ok(c)) if c.opsbot_checkpoint == 1 => (c.line(), Ok(c)),
                    Some(Ok(c)) => (c.line(), Err(format!("checkpoint version {} is not known", c.opsbot_checkpoint))),
                    Some(Err(e)) => (rest.chars().take(400).collect(), Err(format!("not a readable checkpoint: {e}"))),
                    None => (rest.chars().take(400).collect(), Err("not a readable checkpoint".into())),
                };
                if seen.insert(key) {
                    out.push((i + 1, parsed));
                }
            }
            // Escaped at some depth: the name ends in a backslash.
            if !level.contains(ESCAPED_NAME) {
                break;
            }
            level = std::borrow::Cow::Owned(unescape(&level));
        }
    }
    out
}

/// Undoes one level of JSON string escaping (enough for a checkpoint, whose
/// values are digits, hex and a timestamp): `\"` → `"`, `\\` → `\`.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ ('"' | '\\' | '/'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const TRAIL: &str = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f";

    #[test]
    fn a_checkpoint_verifies_only_with_a_trusted_key_and_unaltered() {
        let signer = Signer::from_seed_hex(SEED).unwrap();
        // RFC 8032 test vector 1: this seed's public key.
        assert_eq!(signer.public().hex(), "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        let head = Head { seq: 42, hash: "ab".repeat(32) };
        let checkpoint = signer.sign(TRAIL, &head, Utc::now());
        let trusted = [signer.public()];
        assert_eq!(checkpoint.check_signature(&trusted), Ok(()));
        let other = Signer::from_seed_hex(&"11".repeat(32)).unwrap();
        assert!(checkpoint.check_signature(&[other.public()]).unwrap_err().contains("not a trusted key"));
        for altered in [
            Checkpoint { seq: 41, ..checkpoint.clone() },
            Checkpoint { hash: "cd".repeat(32), ..checkpoint.clone() },
            Checkpoint { at: "2020-01-01T00:00:00Z".into(), ..checkpoint.clone() },
            // Moved to another trail signed with the same key.
            Checkpoint { trail: "ee".repeat(32), ..checkpoint.clone() },
        ] {
            assert!(altered.check_signature(&trusted).unwrap_err().contains("does not verify"), "{altered:?}");
        }
        // A forger who signs with their own key and claims it is ours.
        let forged = Checkpoint { key: signer.public().hex(), ..other.sign(TRAIL, &head, Utc::now()) };
        assert!(forged.check_signature(&trusted).is_err());
    }

    #[test]
    fn checkpoints_are_found_inside_log_and_chat_lines() {
        let signer = Signer::from_seed_hex(SEED).unwrap();
        let one = signer.sign(TRAIL, &Head { seq: 1, hash: "aa".repeat(32) }, Utc::now()).line();
        let two = signer.sign(TRAIL, &Head { seq: 9, hash: "bb".repeat(32) }, Utc::now()).line();
        let text = format!(
            "{one}\n2026-12-01T10:00:00Z INFO opsbot::checkpoint: {two} published\nnothing here\n{{\"opsbot_checkpoint\":1,\"seq\":\n"
        );
        let found = find_all(&text);
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].1.as_ref().unwrap().seq, 1);
        assert_eq!((found[1].0, found[1].1.as_ref().unwrap().seq), (2, 9));
        assert!(found[2].1.is_err());
        // A JSON log pipeline (or a chat export) escapes the object inside a string.
        let escaped = serde_json::to_string(&format!("INFO opsbot::checkpoint: {one}")).unwrap();
        let logged = format!("{{\"level\":\"info\",\"message\":{escaped}}}\n");
        assert!(logged.contains("{\\\"opsbot_checkpoint\\\":"), "{logged}");
        let found = find_all(&logged);
        assert_eq!(found.len(), 1);
        let got = found[0].1.as_ref().unwrap();
        assert_eq!((got.seq, got.trail.as_str()), (1, TRAIL));
        assert_eq!(got.check_signature(&[signer.public()]), Ok(()));
        // A one-line dump of a channel: every checkpoint on the line counts,
        // a forged or damaged one before them hides none, and an object
        // escaped twice (a JSON log inside a container's JSON log) is found.
        // A copy with the real signature but another head, posted before the
        // real one, is found (and fails its signature later) without hiding
        // the real one.
        let forged = two.replace("\"seq\":9", "\"seq\":8");
        assert_ne!(forged, two);
        let dump = serde_json::to_string(&serde_json::json!({"messages": [
            {"text": "{\"opsbot_checkpoint\":1,\"seq\":\"spoof\"}"},
            {"text": forged},
            {"text": one},
            {"text": two},
        ]}))
        .unwrap();
        assert!(!dump.contains('\n'));
        let found = find_all(&dump);
        let seqs: Vec<_> = found.iter().map(|(line, c)| (*line, c.as_ref().map(|c| c.seq).ok())).collect();
        assert_eq!(seqs, [(1, None), (1, Some(8)), (1, Some(1)), (1, Some(9))]);
        let trusted = [signer.public()];
        assert!(found[1].1.as_ref().unwrap().check_signature(&trusted).is_err(), "the forgery does not verify");
        assert_eq!(found[3].1.as_ref().unwrap().check_signature(&trusted), Ok(()), "the real one is kept");
        let twice = serde_json::to_string(&serde_json::json!({"log": logged})).unwrap();
        assert!(twice.contains("{\\\\\\\"opsbot_checkpoint"), "{twice}");
        let found = find_all(&twice);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].1.as_ref().unwrap().check_signature(&[signer.public()]), Ok(()));
        assert!(Signer::from_seed_hex("nope").unwrap_err().contains("64 hex"));
        assert_eq!(Signer::generate_seed_hex().unwrap().len(), 64);
    }
}
