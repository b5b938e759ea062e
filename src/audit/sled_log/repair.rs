//! `opsbot audit repair`: making a trail whose end no crash explains open
//! again, keeping every record.

use super::*;

/// What `opsbot audit repair` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// Why the trail's end needed repair (None: it was already sound).
    pub problem: Option<String>,
    /// Every stored record, verified from the first; all kept.
    pub records: u64,
    pub head: Head,
    /// What `h` and `c` said before.
    pub was_head: Option<Head>,
    pub was_committed: Option<Head>,
    /// A crash's (or a failed commit's) leftover, which opening the store
    /// drops: repair leaves it to that, and changes nothing.
    pub leftover: Option<String>,
}

/// `opsbot audit repair`: makes a trail whose end no crash explains (head
/// deleted or moved back, seals or the layout version removed) open
/// again, keeping every stored record. It verifies the whole chain first and
/// repairs nothing if any record fails: a broken chain cannot be made to
/// verify without rewriting history. Then it seals the last block at the
/// chain's real end, points `h` and `c` there, corrects any seal that does
/// not match its block, and rebuilds the service index from the records.
pub fn repair(db: &sled::Db, write: bool) -> Result<Repaired, AuditError> {
    let Some(tree) = existing_tree(db)? else {
        return Err(AuditError::Damaged("there is no audit trail in this store".into()));
    };
    let trail = Trail::new(tree.clone());
    let read_mark = |key: &[u8]| -> Result<Option<Head>, AuditError> {
        Ok(tree.get(key).map_err(store_error)?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    };
    let (was_head, was_committed) = (read_mark(HEAD_KEY)?, read_mark(COMMITTED_KEY)?);
    let problem = match trail.end()? {
        End::Broken { problem } => Some(problem),
        // Never acknowledged: a repair must not seal it into the trail.
        End::CrashLeftover(leftover) => {
            return Ok(Repaired {
                problem: None,
                records: leftover.head.seq,
                head: leftover.head.clone(),
                was_head,
                was_committed,
                leftover: Some(leftover.describe()),
            })
        }
        End::Clean { .. } => None,
    };
    // Verify every record; note the blocks whose seal is missing or wrong.
    let mut verifier = Verifier::default();
    let mut reseal: Vec<(Vec<u8>, Vec<u8>, Head)> = Vec::new();
    let mut last_block: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut index: Vec<([u8; 9], Vec<u8>)> = Vec::new();
    for item in tree.scan_prefix([BLOCK_PREFIX]) {
        let (key, value) = item.map_err(store_error)?;
        let first = key_seq(&key);
        let block = parse_block(&value);
        let mut records = Vec::with_capacity(block.records.len());
        for (i, bytes) in block.records.iter().enumerate() {
            let seq = first + i as u64;
            verifier.push(seq, bytes).map_err(|failure| {
                AuditError::Damaged(format!(
                    "{failure}. A repair cannot make a broken chain verify without rewriting history, so it changes nothing: keep this data directory as evidence (copy it somewhere safe), and start opsbot on a new --data-dir"
                ))
            })?;
            records.push(decode(seq, bytes)?);
        }
        let entry = index_of(&records);
        if !entry.is_empty() {
            index.push((index_key(first), entry));
        }
        let at = verifier.head();
        if let Some(seal) = &block.seal {
            if seal.as_ref().ok() != Some(&at) {
                let unsealed: Vec<u8> = block.records.iter().flat_map(|r| r.iter().copied().chain([b'\n'])).collect();
                reseal.push((key.to_vec(), unsealed, at.clone()));
            }
        }
        last_block = Some((key.to_vec(), value.to_vec()));
    }
    let head = verifier.head();
    let clean = problem.is_none()
        && reseal.is_empty()
        && was_head.as_ref() == Some(&head)
        && was_committed.as_ref() == Some(&head);
    if clean || !write {
        let problem =
            if clean { None } else { problem.or_else(|| Some("seals or marks did not match the records".into())) };
        return Ok(Repaired { problem, records: head.seq, head, was_head, was_committed, leftover: None });
    }
    for (key, unsealed, at) in reseal {
        tree.insert(key, sealed(&unsealed, &at)).map_err(store_error)?;
    }
    if let Some((key, value)) = last_block {
        let block = parse_block(&value);
        if block.seal.is_none() {
            tree.insert(key, sealed(&value, &head)).map_err(store_error)?;
        }
    }
    for key in tree.scan_prefix([INDEX_PREFIX]).keys() {
        tree.remove(key.map_err(store_error)?).map_err(store_error)?;
    }
    for (key, value) in index {
        tree.insert(key, value).map_err(store_error)?;
    }
    let mark = serde_json::to_vec(&head).expect("head serialises");
    tree.insert(HEAD_KEY, mark.clone()).map_err(store_error)?;
    tree.insert(COMMITTED_KEY, mark).map_err(store_error)?;
    tree.insert(FORMAT_KEY, FORMAT).map_err(store_error)?;
    // A failed-commit mark that named no failed commit (classify refused
    // it): every record is kept, so the mark goes.
    tree.remove(FAILED_KEY).map_err(store_error)?;
    db.flush().map_err(store_error)?;
    Ok(Repaired {
        problem: problem.or_else(|| Some("seals or marks did not match the records".into())),
        records: head.seq,
        head,
        was_head,
        was_committed,
        leftover: None,
    })
}
