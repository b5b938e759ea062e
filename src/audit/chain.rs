//! Sealing and verifying the hash chain.
//!
//! A stored record is `hash (64 hex chars)` followed by the record's JSON body;
//! the hash is SHA-256 over exactly those body bytes, and the body names the
//! previous record's hash in `prev`. Verification never re-serialises: it
//! hashes the bytes as stored, so any altered byte shows.

use super::{AuditEntry, AuditRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The body as hashed: the record without its own hash.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    ts: DateTime<Utc>,
    #[serde(flatten)]
    entry: &'a AuditEntry,
    prev: &'a str,
}

/// Seals an entry: returns the record and the exact bytes to store.
pub fn seal(seq: u64, ts: DateTime<Utc>, entry: AuditEntry, prev: &str) -> (AuditRecord, Vec<u8>) {
    let body = serde_json::to_vec(&Body { seq, ts, entry: &entry, prev }).expect("audit body serialises");
    let hash = hex::encode(Sha256::digest(&body));
    let mut stored = Vec::with_capacity(64 + body.len());
    stored.extend_from_slice(hash.as_bytes());
    stored.extend_from_slice(&body);
    (AuditRecord { seq, ts, entry, prev: prev.to_string(), hash }, stored)
}

/// Checks a stored record's own hash; returns the hash and the body.
fn checked(stored: &[u8]) -> Result<([u8; 32], &[u8]), String> {
    if stored.len() < 64 {
        return Err("record is truncated".into());
    }
    let (hash, body) = stored.split_at(64);
    let actual: [u8; 32] = Sha256::digest(body).into();
    let mut actual_hex = [0u8; 64];
    hex::encode_to_slice(actual, &mut actual_hex).expect("64 hex digits for 32 bytes");
    if actual_hex != hash {
        return Err(format!(
            "content does not match its hash (stored {}…, computed {}…)",
            String::from_utf8_lossy(&hash[..12]),
            String::from_utf8_lossy(&actual_hex[..12])
        ));
    }
    Ok((actual, body))
}

/// Reads a stored value back, checking its own hash.
pub fn open(stored: &[u8]) -> Result<AuditRecord, String> {
    let (hash, body) = checked(stored)?;
    let mut record: AuditRecord =
        serde_json::from_slice(body).map_err(|e| format!("body is not a valid record: {e}"))?;
    record.hash = hex::encode(hash);
    Ok(record)
}

/// The chain's end: the last record's number and hash (seq 0 and
/// [`GENESIS`] for an empty trail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl Head {
    pub fn genesis() -> Head {
        Head { seq: 0, hash: GENESIS.to_string() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    pub records: u64,
    pub head_hash: String,
    /// Something worth saying that is not a failure (a commit a crash cut short).
    pub note: Option<String>,
}

/// The first bad record and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq}: {problem}")]
pub struct VerifyFailure {
    pub seq: u64,
    pub problem: String,
}

/// What verification reads of a body: its place and its link.
#[derive(Deserialize)]
struct Link<'a> {
    seq: u64,
    #[serde(borrow)]
    prev: &'a str,
}

/// What verification needs of one stored record: its own (checked) hash,
/// the number its body claims and the previous hash it names. Computing it
/// is the costly part (SHA-256 and a JSON parse) and needs no other record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub hash: [u8; 32],
    pub seq: u64,
    /// `None` if `prev` is not 64 hex digits.
    pub prev: Option<[u8; 32]>,
}

/// Digests one stored record: its hash checked against its bytes, its body
/// parsed for `seq` and `prev` (the rest is syntax-checked and skipped).
pub fn digest(stored: &[u8]) -> Result<Digest, String> {
    let (hash, body) = checked(stored)?;
    let link: Link = serde_json::from_slice(body).map_err(|e| format!("body is not a valid record: {e}"))?;
    let mut prev = [0u8; 32];
    let prev = hex::decode_to_slice(link.prev, &mut prev).ok().map(|()| prev);
    Ok(Digest { hash, seq: link.seq, prev })
}

/// Walks stored records in order, one at a time, holding only the last
/// hash: memory stays flat whatever the trail's length. Each record's hash
/// is checked against its exact bytes, its number against its place, and
/// its `prev` against the record before it. The body is parsed only for
/// `seq` and `prev` (the rest is syntax-checked and skipped).
#[derive(Debug, Clone)]
pub struct Verifier {
    next_seq: u64,
    prev: [u8; 32],
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier { next_seq: 1, prev: [0; 32] }
    }
}

impl Verifier {
    /// A verifier that continues after `head` (whose hash it trusts).
    pub fn after(head: &Head) -> Result<Verifier, String> {
        let mut prev = [0u8; 32];
        hex::decode_to_slice(&head.hash, &mut prev).map_err(|_| format!("head {} has no hash", head.seq))?;
        Ok(Verifier { next_seq: head.seq + 1, prev })
    }

    /// Checks the record stored at position `at`.
    pub fn push(&mut self, at: u64, stored: &[u8]) -> Result<(), VerifyFailure> {
        let digest = digest(stored);
        self.push_digest(at, &digest)
    }

    /// Checks a record already digested (possibly on another thread).
    pub fn push_digest(&mut self, at: u64, digest: &Result<Digest, String>) -> Result<(), VerifyFailure> {
        let expected = self.next_seq;
        if at != expected {
            return Err(VerifyFailure {
                seq: expected,
                problem: format!("record {expected} is missing (the next stored record is {at})"),
            });
        }
        let fail = |problem: String| VerifyFailure { seq: at, problem };
        let digest = digest.as_ref().map_err(|problem| fail(problem.clone()))?;
        if digest.seq != at {
            return Err(fail(format!("slot {at} holds record {} (records were moved or swapped)", digest.seq)));
        }
        if digest.prev != Some(self.prev) {
            return Err(fail(
                "its `prev` hash does not match the record before it (a record before it was changed or removed)"
                    .into(),
            ));
        }
        self.prev = digest.hash;
        self.next_seq += 1;
        Ok(())
    }

    /// The last record checked (genesis before any).
    pub fn head(&self) -> Head {
        Head { seq: self.next_seq - 1, hash: hex::encode(self.prev) }
    }
}

/// Verifies `(position, stored bytes)` pairs from the first record on, and
/// that they end at `head` when one is given.
pub fn verify(
    stored: impl IntoIterator<Item = (u64, Vec<u8>)>,
    head: Option<Head>,
) -> Result<VerifySummary, VerifyFailure> {
    let mut verifier = Verifier::default();
    for (at, value) in stored {
        verifier.push(at, &value)?;
    }
    let end = verifier.head();
    if let Some(head) = head {
        if head != end {
            return Err(VerifyFailure {
                seq: head.seq.max(end.seq),
                problem: format!(
                    "the chain ends at record {} but the store's head says {} (records were removed from the end)",
                    end.seq, head.seq
                ),
            });
        }
    }
    Ok(VerifySummary { records: end.seq, head_hash: end.hash, note: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::RecordKind;

    fn chain(n: u64) -> (Vec<(u64, Vec<u8>)>, Head) {
        let mut prev = GENESIS.to_string();
        let mut out = Vec::new();
        for seq in 1..=n {
            let entry = AuditEntry::new(RecordKind::Request).detail(format!("record {seq}"));
            let (record, stored) = seal(seq, Utc::now(), entry, &prev);
            prev = record.hash;
            out.push((seq, stored));
        }
        (out, Head { seq: n, hash: prev })
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let (records, head) = chain(5);
        assert_eq!(verify(records, Some(head)).unwrap().records, 5);
    }

    #[test]
    fn each_kind_of_tampering_names_the_record() {
        let (records, head) = chain(5);
        let mut flipped = records.clone();
        let last = flipped[2].1.len() - 3;
        flipped[2].1[last] ^= 1;
        assert_eq!(verify(flipped, Some(head.clone())).unwrap_err().seq, 3);

        let mut removed = records.clone();
        removed.remove(1);
        assert_eq!(verify(removed, Some(head.clone())).unwrap_err().seq, 2);

        let mut swapped = records.clone();
        let (a, b) = (swapped[1].1.clone(), swapped[3].1.clone());
        swapped[1].1 = b;
        swapped[3].1 = a;
        assert_eq!(verify(swapped, Some(head.clone())).unwrap_err().seq, 2);

        let mut truncated = records.clone();
        truncated.pop();
        assert_eq!(verify(truncated, Some(head.clone())).unwrap_err().seq, 5);

        // A consistent rewrite of a record's body and hash breaks the next link.
        let mut rewritten = records.clone();
        let (_, stored) = seal(
            2,
            Utc::now(),
            AuditEntry::new(RecordKind::Request).detail("forged"),
            &String::from_utf8_lossy(&records[0].1[..64]),
        );
        rewritten[1].1 = stored;
        assert_eq!(verify(rewritten, Some(head)).unwrap_err().seq, 3);
    }

    #[test]
    fn a_verifier_can_start_after_a_known_head() {
        let (records, head) = chain(6);
        let (first, rest) = records.split_at(3);
        let mut from_start = Verifier::default();
        for (at, stored) in first {
            from_start.push(*at, stored).unwrap();
        }
        let mut resumed = Verifier::after(&from_start.head()).unwrap();
        for (at, stored) in rest {
            resumed.push(*at, stored).unwrap();
        }
        assert_eq!(resumed.head(), head);
    }
}
