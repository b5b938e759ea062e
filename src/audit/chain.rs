//! Sealing and verifying the hash chain.
//!
//! A stored record is `hash (64 hex chars)` followed by the record's JSON body;
//! the hash is SHA-256 over exactly those body bytes, and the body names the
//! previous record's hash in `prev`. Verification never re-serialises: it
//! hashes the bytes as stored, so any altered byte shows.

use super::{AuditEntry, AuditRecord};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

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

/// Reads a stored value back, checking its own hash.
pub fn open(stored: &[u8]) -> Result<AuditRecord, String> {
    if stored.len() < 64 {
        return Err("record is truncated".into());
    }
    let (hash, body) = stored.split_at(64);
    let hash = std::str::from_utf8(hash).map_err(|_| "stored hash is not text".to_string())?;
    let actual = hex::encode(Sha256::digest(body));
    if actual != hash {
        return Err(format!(
            "content does not match its hash (stored {}…, computed {}…)",
            &hash[..12.min(hash.len())],
            &actual[..12]
        ));
    }
    let mut record: AuditRecord =
        serde_json::from_slice(body).map_err(|e| format!("body is not a valid record: {e}"))?;
    record.hash = actual;
    Ok(record)
}

/// The chain's end as recorded next to it (detects a removed last record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    pub records: u64,
    pub head_hash: String,
}

/// The first bad record and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit record {seq}: {problem}")]
pub struct VerifyFailure {
    pub seq: u64,
    pub problem: String,
}

/// Walks `(key sequence number, stored value)` pairs in key order.
pub fn verify(
    stored: impl IntoIterator<Item = (u64, Vec<u8>)>,
    head: Option<Head>,
) -> Result<VerifySummary, VerifyFailure> {
    let mut expected_seq = 1u64;
    let mut prev = GENESIS.to_string();
    for (key, value) in stored {
        if key != expected_seq {
            return Err(VerifyFailure {
                seq: expected_seq,
                problem: format!("record {expected_seq} is missing (the next stored record is {key})"),
            });
        }
        let record = open(&value).map_err(|problem| VerifyFailure { seq: key, problem })?;
        if record.seq != key {
            return Err(VerifyFailure {
                seq: key,
                problem: format!("slot {key} holds record {} (records were moved or swapped)", record.seq),
            });
        }
        if record.prev != prev {
            return Err(VerifyFailure {
                seq: key,
                problem:
                    "its `prev` hash does not match the record before it (a record before it was changed or removed)"
                        .into(),
            });
        }
        prev = record.hash;
        expected_seq += 1;
    }
    let count = expected_seq - 1;
    if let Some(head) = head {
        if head.seq != count || head.hash != prev {
            return Err(VerifyFailure {
                seq: head.seq.max(count),
                problem: format!(
                    "the chain ends at record {count} but the store's head says {} (records were removed from the end)",
                    head.seq
                ),
            });
        }
    }
    Ok(VerifySummary { records: count, head_hash: prev })
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
        assert_eq!(verify(truncated, Some(head)).unwrap_err().seq, 5);
    }
}
