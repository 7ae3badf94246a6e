//! Tamper-evident, append-only audit trail.
//!
//! Every access to and change of patient data is recorded as an [`AuditEvent`]
//! tagged with a DICOM audit event ID from DCM (PS3.16 CID 400 "Audit Event
//! ID", as used by the audit message schema of PS3.15 Annex A.5):
//!
//! | constant                         | DCM code | DCM meaning                   | used for                          |
//! |----------------------------------|----------|-------------------------------|-----------------------------------|
//! | [`event::AUDIT_LOG_USED`]        | 110101   | Audit Log Used                | reading the audit log itself      |
//! | [`event::INSTANCES_ACCESSED`]    | 110103   | DICOM Instances Accessed      | retrieve, metadata, frames, render|
//! | [`event::INSTANCES_TRANSFERRED`] | 110104   | DICOM Instances Transferred   | transfers between systems         |
//! | [`event::DELETE`]                | 110105   | DICOM Study Deleted           | delete                            |
//! | [`event::EXPORT`]                | 110106   | Export                        | export / download                 |
//! | [`event::INSTANCES_STORED`]      | 110107   | Import                        | store (STOW-RS, import)           |
//! | [`event::QUERY`]                 | 110112   | Query                         | search (QIDO-RS)                  |
//! | [`event::SECURITY_ALERT`]        | 110113   | Security Alert                | grants, claims, tokens, roles     |
//! | [`event::USER_AUTHENTICATION`]   | 110114   | User Authentication           | sign-in success / failure         |
//!
//! # Chain
//!
//! Records live in the sled tree `audit_chain`, keyed by the big-endian `u64`
//! sequence number (0 for the first record, no gaps). Each [`AuditRecord`]
//! holds `prev`, the hash of the previous record (64 zeros for the first), and
//! `hash`, the hex BLAKE3 of the record's *canonical serialization*: the
//! `serde_json::to_vec` of the struct `{seq, prev, event}` (see
//! [`canonical_bytes`]). Editing, removing, inserting or reordering a record
//! therefore breaks the chain, which [`AuditLog::verify`] detects. Truncating
//! the newest records is not detectable from the chain alone; anchor
//! [`AuditLog::head`] elsewhere (e.g. in the server log) if that matters.
//!
//! There is deliberately no update or delete API.
//!
//! ## Canonical bytes and determinism
//!
//! `serde_json` writes struct fields in declaration order with no
//! insignificant whitespace, so for fixed structs the output is deterministic.
//! The free-form `detail` value is different: `serde_json::Map` is a
//! `BTreeMap` (sorted keys) by default but an insertion-ordered `IndexMap` when
//! the `preserve_order` feature is on, and **that feature is enabled in the
//! Lightbox workspace** (through `dicom-json`). So before hashing, `detail` is
//! rebuilt with its object keys inserted in sorted order ([`canonical_json`]),
//! which yields sorted keys under either map implementation.
//!
//! The stored value in sled is `hash_hex (64 ASCII bytes) ++ canonical bytes`,
//! and verification hashes the stored canonical bytes as they are instead of
//! re-serializing the parsed record. That keeps verification independent of
//! serde_json features (`preserve_order`, `float_roundtrip`,
//! `arbitrary_precision`) and versions, so a log written by one build can be
//! verified by another (`lightbox audit verify`).
//!
//! # Writing off the request path
//!
//! Handlers call [`AuditSink::record`], which never blocks: it hands the event
//! to a background task ([`AuditLog::spawn_writer`]) over a bounded channel.
//! The task writes batches with [`AuditLog::append_batch`] at least every
//! 100 ms or as soon as 256 events are queued. If an event is dropped (channel
//! full, writer gone) or a write fails, [`AuditSink::healthy`] turns false for
//! good, so reads of patient data can fail closed (503).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// DICOM audit event IDs (DCM, PS3.16 CID 400), stored in [`AuditEvent::event`].
pub mod event {
    /// 110114 User Authentication: sign-in success or failure, sign-out.
    pub const USER_AUTHENTICATION: &str = "110114";
    /// 110112 Query: QIDO-RS searches.
    pub const QUERY: &str = "110112";
    /// 110103 DICOM Instances Accessed: retrieve, metadata, frames, rendering.
    pub const INSTANCES_ACCESSED: &str = "110103";
    /// Alias of [`INSTANCES_ACCESSED`] (110103).
    pub const RETRIEVE: &str = INSTANCES_ACCESSED;
    /// 110106 Export: export or download.
    pub const EXPORT: &str = "110106";
    /// 110107 Import: instances stored (STOW-RS, import).
    pub const INSTANCES_STORED: &str = "110107";
    /// 110105 DICOM Study Deleted.
    pub const DELETE: &str = "110105";
    /// 110113 Security Alert: grants, claims, tokens, role and account changes.
    pub const SECURITY_ALERT: &str = "110113";
    /// 110101 Audit Log Used: reading the audit log itself.
    pub const AUDIT_LOG_USED: &str = "110101";
    /// 110104 DICOM Instances Transferred.
    pub const INSTANCES_TRANSFERRED: &str = "110104";
}

/// `prev` of the first record.
const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Name of the sled tree holding the chain.
const TREE_NAME: &str = "audit_chain";
/// Length of the hex hash prefix of a stored value.
const HASH_HEX_LEN: usize = 64;
/// Capacity of the channel between [`AuditSink`] and the writer task.
const CHANNEL_CAPACITY: usize = 10_000;
/// The writer writes as soon as this many events are queued...
const BATCH_MAX: usize = 256;
/// ...and at the latest this long after the first event of a batch arrived.
const BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Outcome of the audited action.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Refused,
}

/// One audited action. Field order is part of the canonical serialization:
/// do not reorder fields (append new ones only with care, it changes hashes
/// of new records but not the verification of old ones).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuditEvent {
    /// Milliseconds since the Unix epoch ([`now_ms`]).
    pub time_ms: u64,
    /// DCM audit event ID, one of [`event`] (e.g. `"110114"`).
    pub event: String,
    /// Short verb: `"login"`, `"stow"`, `"search"`, ...
    pub action: String,
    pub outcome: Outcome,
    pub user_id: Option<String>,
    pub role: Option<String>,
    pub ip: Option<String>,
    /// Study Instance UIDs concerned.
    pub studies: Vec<String>,
    /// Free-form details; object keys are sorted when recorded.
    pub detail: Value,
}

impl AuditEvent {
    /// An event stamped now, with no principal, no studies and `detail: null`.
    pub fn new(event: &str, action: &str, outcome: Outcome) -> Self {
        Self {
            time_ms: now_ms(),
            event: event.to_owned(),
            action: action.to_owned(),
            outcome,
            user_id: None,
            role: None,
            ip: None,
            studies: Vec::new(),
            detail: Value::Null,
        }
    }
}

/// A record of the chain, as returned by [`AuditLog::query`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// Position in the chain, from 0, without gaps.
    pub seq: u64,
    /// `hash` of the previous record; 64 zeros for the first.
    pub prev: String,
    pub event: AuditEvent,
    /// Hex BLAKE3 of [`canonical_bytes`]`(seq, prev, event)`.
    pub hash: String,
}

/// Result of [`AuditLog::verify`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records in the tree.
    pub records: u64,
    /// The first record (by key order) that breaks the chain, and why.
    /// `None` means the whole chain is intact.
    pub first_bad: Option<(u64, String)>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Filter for [`AuditLog::query`]; `None` fields match everything.
/// Time bounds are half-open: `since_ms <= time_ms < until_ms`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub user_id: Option<String>,
    /// Matches records whose `studies` contain this Study Instance UID.
    pub study: Option<String>,
    /// DCM audit event ID.
    pub event: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

impl AuditFilter {
    fn matches(&self, e: &AuditEvent) -> bool {
        self.user_id
            .as_ref()
            .is_none_or(|u| e.user_id.as_ref() == Some(u))
            && self.study.as_ref().is_none_or(|s| e.studies.contains(s))
            && self.event.as_ref().is_none_or(|ev| &e.event == ev)
            && self.since_ms.is_none_or(|t| e.time_ms >= t)
            && self.until_ms.is_none_or(|t| e.time_ms < t)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store error: {0}")]
    Store(#[from] sled::Error),
    #[error("audit record encoding error: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("audit chain corrupt at seq {seq}: {why}")]
    Corrupt { seq: u64, why: String },
    #[error("audit writer is not running")]
    WriterGone,
    #[error("audit sink is unhealthy: events were lost")]
    Unhealthy,
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `value` with every object rebuilt so its keys are inserted in sorted
/// order: sorted output whether `serde_json::Map` is a `BTreeMap` (default)
/// or an insertion-ordered `IndexMap` (`preserve_order`, on in this workspace).
pub fn canonical_json(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical_json(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical_json).collect()),
        other => other,
    }
}

/// The hashed body of a record; field order is fixed by this declaration.
#[derive(Serialize)]
struct CanonicalRef<'a> {
    seq: u64,
    prev: &'a str,
    event: &'a AuditEvent,
}

#[derive(Deserialize)]
struct CanonicalOwned {
    seq: u64,
    prev: String,
    event: AuditEvent,
}

/// Canonical serialization of `(seq, prev, event)`: `serde_json::to_vec` of
/// `{"seq":..,"prev":..,"event":{..}}`. `event.detail` must already be in
/// [`canonical_json`] form (the log ensures this when appending).
pub fn canonical_bytes(seq: u64, prev: &str, event: &AuditEvent) -> Result<Vec<u8>, AuditError> {
    Ok(serde_json::to_vec(&CanonicalRef { seq, prev, event })?)
}

fn hash_hex(bytes: &[u8]) -> String {
    hex::encode(blake3::hash(bytes).as_bytes())
}

fn key_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Splits a stored value into its hash and canonical body.
fn split_value(value: &[u8]) -> Result<(&str, &[u8]), String> {
    if value.len() < HASH_HEX_LEN {
        return Err("stored value too short".into());
    }
    let (hash, body) = value.split_at(HASH_HEX_LEN);
    let hash = std::str::from_utf8(hash).map_err(|_| "stored hash is not ASCII hex".to_string())?;
    if !hash
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err("stored hash is not lowercase hex".into());
    }
    Ok((hash, body))
}

fn decode_record(seq_key: u64, value: &[u8]) -> Result<AuditRecord, AuditError> {
    let (hash, body) =
        split_value(value).map_err(|why| AuditError::Corrupt { seq: seq_key, why })?;
    let c: CanonicalOwned = serde_json::from_slice(body)?;
    Ok(AuditRecord {
        seq: c.seq,
        prev: c.prev,
        event: c.event,
        hash: hash.to_owned(),
    })
}

struct ChainHead {
    next_seq: u64,
    prev: String,
}

/// The append-only, hash-chained audit log in the sled tree `audit_chain`.
pub struct AuditLog {
    db: sled::Db,
    tree: sled::Tree,
    head: Mutex<ChainHead>,
    /// Test hook: make `append_batch` fail as a broken store would.
    #[cfg(test)]
    pub(crate) fail_writes: AtomicBool,
}

impl AuditLog {
    /// Opens (or creates) the tree `audit_chain` and restores the chain head
    /// (next seq and last hash) from the newest record.
    pub fn open(db: &sled::Db) -> Result<Self, AuditError> {
        let tree = db.open_tree(TREE_NAME)?;
        let head = match tree.last()? {
            None => ChainHead {
                next_seq: 0,
                prev: GENESIS_PREV.to_owned(),
            },
            Some((key, value)) => {
                let seq = key_seq(&key).ok_or_else(|| AuditError::Corrupt {
                    seq: u64::MAX,
                    why: format!("last key has {} bytes, expected 8", key.len()),
                })?;
                let (hash, _) =
                    split_value(&value).map_err(|why| AuditError::Corrupt { seq, why })?;
                ChainHead {
                    next_seq: seq.checked_add(1).ok_or_else(|| AuditError::Corrupt {
                        seq,
                        why: "sequence exhausted".into(),
                    })?,
                    prev: hash.to_owned(),
                }
            }
        };
        Ok(Self {
            db: db.clone(),
            tree,
            head: Mutex::new(head),
            #[cfg(test)]
            fail_writes: AtomicBool::new(false),
        })
    }

    /// `(number of records, hash of the newest record)`; the hash is 64 zeros
    /// for an empty log. Publishing it elsewhere makes truncation detectable.
    pub fn head(&self) -> (u64, String) {
        let head = self.lock_head();
        (head.next_seq, head.prev.clone())
    }

    fn lock_head(&self) -> std::sync::MutexGuard<'_, ChainHead> {
        // The head is only replaced as a whole after a successful write, so a
        // poisoned lock still holds a consistent value.
        self.head.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Chains `events` after the current head, writes them in one atomic sled
    /// batch and flushes the database. Blocking: call it from
    /// `spawn_blocking` or a plain thread, not directly on the async executor.
    pub fn append_batch(&self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut head = self.lock_head();
        #[cfg(test)]
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(AuditError::Store(sled::Error::Unsupported(
                "injected audit write failure".into(),
            )));
        }
        let mut batch = sled::Batch::default();
        let mut seq = head.next_seq;
        let mut prev = head.prev.clone();
        for mut event in events {
            event.detail = canonical_json(std::mem::take(&mut event.detail));
            let body = canonical_bytes(seq, &prev, &event)?;
            let hash = hash_hex(&body);
            let mut value = Vec::with_capacity(HASH_HEX_LEN + body.len());
            value.extend_from_slice(hash.as_bytes());
            value.extend_from_slice(&body);
            batch.insert(&seq.to_be_bytes(), value);
            seq = seq.checked_add(1).ok_or_else(|| AuditError::Corrupt {
                seq,
                why: "sequence exhausted".into(),
            })?;
            prev = hash;
        }
        self.tree.apply_batch(batch)?;
        // The records are in the tree now: advance the head even if the flush
        // below fails, or the next batch would overwrite them.
        *head = ChainHead {
            next_seq: seq,
            prev,
        };
        self.db.flush()?;
        Ok(())
    }

    /// Walks every record in key order and checks the key/seq agreement, seq
    /// continuity from 0, each `prev` link and each hash (over the stored
    /// canonical bytes). Reports the first broken record.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let mut records = 0u64;
        let mut first_bad = None;
        let mut expected_seq = 0u64;
        let mut expected_prev = GENESIS_PREV.to_owned();
        for item in self.tree.iter() {
            let (key, value) = item?;
            records += 1;
            if first_bad.is_some() {
                continue;
            }
            let Some(key_seq) = key_seq(&key) else {
                first_bad = Some((
                    expected_seq,
                    format!("key of {} bytes, expected 8", key.len()),
                ));
                continue;
            };
            match check_record(key_seq, expected_seq, &expected_prev, &value) {
                Ok(hash) => {
                    expected_prev = hash;
                    expected_seq = expected_seq.wrapping_add(1);
                }
                Err(why) => first_bad = Some((key_seq, why)),
            }
        }
        Ok(VerifyReport { records, first_bad })
    }

    /// Records matching `filter`, newest first, at most `limit`.
    pub fn query(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for item in self.tree.iter().rev() {
            let (key, value) = item?;
            let seq = key_seq(&key).ok_or_else(|| AuditError::Corrupt {
                seq: u64::MAX,
                why: format!("key of {} bytes, expected 8", key.len()),
            })?;
            let record = decode_record(seq, &value)?;
            if filter.matches(&record.event) {
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Starts the background writer and returns the sink feeding it.
    ///
    /// Must be called inside a tokio runtime (it uses `tokio::spawn`; it
    /// panics otherwise). The task ends once every [`AuditSink`] clone is
    /// dropped, after writing what is still queued; call
    /// [`AuditSink::flush`] before shutdown to be sure.
    pub fn spawn_writer(self: Arc<Self>) -> AuditSink {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let healthy = Arc::new(AtomicBool::new(true));
        tokio::spawn(run_writer(self, rx, healthy.clone()));
        AuditSink {
            inner: Arc::new(SinkInner {
                tx,
                healthy,
                dropped: AtomicU64::new(0),
            }),
        }
    }
}

/// Checks one stored record; returns its hash, or why it is bad.
fn check_record(
    key_seq: u64,
    expected_seq: u64,
    expected_prev: &str,
    value: &[u8],
) -> Result<String, String> {
    if key_seq != expected_seq {
        return Err(format!(
            "expected seq {expected_seq}, found key {key_seq} (record missing or out of order)"
        ));
    }
    let (hash, body) = split_value(value)?;
    let c: CanonicalOwned =
        serde_json::from_slice(body).map_err(|e| format!("undecodable record: {e}"))?;
    if c.seq != key_seq {
        return Err(format!(
            "record says seq {} but is stored under key {key_seq}",
            c.seq
        ));
    }
    if c.prev != expected_prev {
        return Err(format!(
            "prev {} does not match the previous record's hash {expected_prev}",
            c.prev
        ));
    }
    let actual = hash_hex(body);
    if actual != hash {
        return Err(format!("hash mismatch: stored {hash}, computed {actual}"));
    }
    Ok(actual)
}

// Nearly every message is an event, so boxing it would only add an
// allocation per event. (The size gap only shows with serde_json's
// `preserve_order`, which this workspace enables.)
#[allow(clippy::large_enum_variant)]
enum Msg {
    Event(AuditEvent),
    Barrier(oneshot::Sender<()>),
}

async fn run_writer(log: Arc<AuditLog>, mut rx: mpsc::Receiver<Msg>, healthy: Arc<AtomicBool>) {
    let mut pending: Vec<AuditEvent> = Vec::with_capacity(BATCH_MAX);
    let mut barriers: Vec<oneshot::Sender<()>> = Vec::new();
    fn take(msg: Msg, pending: &mut Vec<AuditEvent>, barriers: &mut Vec<oneshot::Sender<()>>) {
        match msg {
            Msg::Event(e) => pending.push(e),
            Msg::Barrier(b) => barriers.push(b),
        }
    }
    loop {
        // Wait for the first message of the next batch.
        let Some(first) = rx.recv().await else { break };
        take(first, &mut pending, &mut barriers);
        let deadline = tokio::time::sleep(BATCH_INTERVAL);
        tokio::pin!(deadline);
        let mut closed = false;
        // Gather more until the batch is full, the interval is over or a
        // barrier asks for everything so far to be written.
        while pending.len() < BATCH_MAX && barriers.is_empty() {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => take(msg, &mut pending, &mut barriers),
                    None => { closed = true; break; }
                },
                () = &mut deadline => break,
            }
        }
        write_batch(&log, std::mem::take(&mut pending), &healthy).await;
        for barrier in barriers.drain(..) {
            let _ = barrier.send(());
        }
        if closed {
            break;
        }
    }
    tracing::debug!("audit writer stopped");
}

async fn write_batch(log: &Arc<AuditLog>, events: Vec<AuditEvent>, healthy: &AtomicBool) {
    if events.is_empty() {
        return;
    }
    let n = events.len();
    let log = log.clone();
    let result = tokio::task::spawn_blocking(move || log.append_batch(events)).await;
    let err = match result {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(join) => format!("writer panicked: {join}"),
    };
    healthy.store(false, Ordering::SeqCst);
    tracing::error!(lost = n, error = %err, "audit write failed; audit sink is now unhealthy");
}

#[derive(Debug)]
struct SinkInner {
    tx: mpsc::Sender<Msg>,
    healthy: Arc<AtomicBool>,
    dropped: AtomicU64,
}

/// Cheap, cloneable handle for recording audit events from request handlers.
#[derive(Clone, Debug)]
pub struct AuditSink {
    inner: Arc<SinkInner>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Event(e) => f.debug_tuple("Event").field(e).finish(),
            Msg::Barrier(_) => f.write_str("Barrier"),
        }
    }
}

impl AuditSink {
    /// Queues `event` for the writer. Never blocks: if the queue is full or
    /// the writer is gone, the event is dropped, the sink becomes unhealthy
    /// for good and an error is logged (the first drop and every 1024th).
    pub fn record(&self, event: AuditEvent) {
        let why = match self.inner.tx.try_send(Msg::Event(event)) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => "queue full",
            Err(mpsc::error::TrySendError::Closed(_)) => "writer gone",
        };
        self.inner.healthy.store(false, Ordering::SeqCst);
        let dropped = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped == 1 || dropped.is_multiple_of(1024) {
            tracing::error!(
                dropped,
                reason = why,
                "audit event dropped; audit sink is now unhealthy"
            );
        }
    }

    /// False once any event was dropped or any write failed; callers serving
    /// patient data should then refuse (503) rather than serve unaudited.
    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::SeqCst)
    }

    /// Waits until every event recorded before this call is written (or its
    /// write failed). `Ok` if the sink is still healthy afterwards.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        let gone = |healthy: &AtomicBool| {
            healthy.store(false, Ordering::SeqCst);
            AuditError::WriterGone
        };
        if self.inner.tx.send(Msg::Barrier(tx)).await.is_err() {
            return Err(gone(&self.inner.healthy));
        }
        if rx.await.is_err() {
            return Err(gone(&self.inner.healthy));
        }
        if self.healthy() {
            Ok(())
        } else {
            Err(AuditError::Unhealthy)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .unwrap();
        (dir, db)
    }

    fn ev(i: u64, user: &str, event: &str, studies: &[&str]) -> AuditEvent {
        AuditEvent {
            time_ms: 1_000 + i,
            event: event.to_owned(),
            action: format!("action{i}"),
            outcome: Outcome::Success,
            user_id: Some(user.to_owned()),
            role: Some("staff".to_owned()),
            ip: Some("127.0.0.1".to_owned()),
            studies: studies.iter().map(|s| s.to_string()).collect(),
            detail: json!({"z": i, "a": {"y": 1, "b": [{"k2": 2, "k1": 1}]}}),
        }
    }

    fn filled(n: u64) -> (tempfile::TempDir, sled::Db, AuditLog) {
        let (dir, db) = db();
        let log = AuditLog::open(&db).unwrap();
        let events = (0..n)
            .map(|i| ev(i, "u1", event::QUERY, &["1.2.3"]))
            .collect();
        log.append_batch(events).unwrap();
        (dir, db, log)
    }

    fn raw(log: &AuditLog, seq: u64) -> Vec<u8> {
        log.tree.get(seq.to_be_bytes()).unwrap().unwrap().to_vec()
    }

    fn body_value(log: &AuditLog, seq: u64) -> Value {
        serde_json::from_slice(&raw(log, seq)[HASH_HEX_LEN..]).unwrap()
    }

    fn put(log: &AuditLog, seq: u64, hash: &str, body: &[u8]) {
        let mut v = hash.as_bytes().to_vec();
        v.extend_from_slice(body);
        log.tree.insert(seq.to_be_bytes(), v).unwrap();
    }

    #[test]
    fn append_and_verify_round_trip() {
        let (_d, _db, log) = filled(5);
        log.append_batch(vec![ev(5, "u2", event::EXPORT, &[])])
            .unwrap();
        let report = log.verify().unwrap();
        assert_eq!(
            report,
            VerifyReport {
                records: 6,
                first_bad: None
            }
        );
        assert!(report.ok());
        let all = log.query(&AuditFilter::default(), 100).unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(all[5].seq, 0);
        assert_eq!(all[5].prev, GENESIS_PREV);
        for w in all.windows(2) {
            assert_eq!(w[0].prev, w[1].hash);
            assert_eq!(w[0].seq, w[1].seq + 1);
        }
        // The hash is the BLAKE3 of the canonical serialization.
        let r = &all[0];
        assert_eq!(
            r.hash,
            hash_hex(&canonical_bytes(r.seq, &r.prev, &r.event).unwrap())
        );
        assert_eq!(log.head(), (6, r.hash.clone()));
        // Events round-trip (detail keys canonicalized, values intact).
        assert_eq!(all[0].event, ev(5, "u2", event::EXPORT, &[]));
    }

    #[test]
    fn canonical_detail_has_sorted_keys() {
        let (_d, _db, log) = filled(1);
        let bytes = raw(&log, 0);
        let body = std::str::from_utf8(&bytes[HASH_HEX_LEN..]).unwrap();
        assert!(body.starts_with(r#"{"seq":0,"prev":"000"#), "{body}");
        assert!(
            body.contains(r#""detail":{"a":{"b":[{"k1":1,"k2":2}],"y":1},"z":0}"#),
            "{body}"
        );
        // Insertion order of keys does not matter.
        let mut m1 = serde_json::Map::new();
        m1.insert("b".into(), json!(1));
        m1.insert("a".into(), json!(2));
        let mut m2 = serde_json::Map::new();
        m2.insert("a".into(), json!(2));
        m2.insert("b".into(), json!(1));
        assert_eq!(
            serde_json::to_vec(&canonical_json(Value::Object(m1))).unwrap(),
            serde_json::to_vec(&canonical_json(Value::Object(m2))).unwrap()
        );
    }

    #[test]
    fn empty_log_verifies_and_empty_batch_is_noop() {
        let (_d, db) = db();
        let log = AuditLog::open(&db).unwrap();
        log.append_batch(Vec::new()).unwrap();
        assert_eq!(
            log.verify().unwrap(),
            VerifyReport {
                records: 0,
                first_bad: None
            }
        );
        assert_eq!(log.head(), (0, GENESIS_PREV.to_owned()));
    }

    #[test]
    fn detects_modified_event_field() {
        let (_d, _db, log) = filled(5);
        let hash = String::from_utf8(raw(&log, 2)[..HASH_HEX_LEN].to_vec()).unwrap();
        let mut body = body_value(&log, 2);
        body["event"]["outcome"] = json!("failure");
        put(&log, 2, &hash, &serde_json::to_vec(&body).unwrap());
        let report = log.verify().unwrap();
        assert_eq!(report.records, 5);
        let (seq, why) = report.first_bad.unwrap();
        assert_eq!(seq, 2);
        assert!(why.contains("hash mismatch"), "{why}");
    }

    #[test]
    fn detects_deleted_record() {
        let (_d, _db, log) = filled(5);
        log.tree.remove(2u64.to_be_bytes()).unwrap();
        let report = log.verify().unwrap();
        assert_eq!(report.records, 4);
        let (seq, why) = report.first_bad.unwrap();
        assert_eq!(seq, 3);
        assert!(why.contains("expected seq 2"), "{why}");
    }

    #[test]
    fn detects_deleted_first_record() {
        let (_d, _db, log) = filled(3);
        log.tree.remove(0u64.to_be_bytes()).unwrap();
        let (seq, _) = log.verify().unwrap().first_bad.unwrap();
        assert_eq!(seq, 1);
    }

    #[test]
    fn detects_swapped_records() {
        let (_d, _db, log) = filled(5);
        let (a, b) = (raw(&log, 1), raw(&log, 2));
        log.tree.insert(1u64.to_be_bytes(), b).unwrap();
        log.tree.insert(2u64.to_be_bytes(), a).unwrap();
        let (seq, why) = log.verify().unwrap().first_bad.unwrap();
        assert_eq!(seq, 1);
        assert!(why.contains("seq 2"), "{why}");
    }

    #[test]
    fn detects_swapped_records_with_renumbered_seq() {
        // Swap two events and fix up seq and hash: the prev links break.
        let (_d, _db, log) = filled(5);
        let (mut a, mut b) = (body_value(&log, 1), body_value(&log, 2));
        std::mem::swap(&mut a["event"], &mut b["event"]);
        for (seq, body) in [(1u64, a), (2, b)] {
            let bytes = serde_json::to_vec(&body).unwrap();
            put(&log, seq, &hash_hex(&bytes), &bytes);
        }
        let (seq, why) = log.verify().unwrap().first_bad.unwrap();
        assert_eq!(seq, 2);
        assert!(why.contains("prev"), "{why}");
    }

    #[test]
    fn detects_recomputed_hash_forgery() {
        let (_d, _db, log) = filled(5);
        let original = decode_record(2, &raw(&log, 2)).unwrap();
        let mut forged = original.event.clone();
        forged.user_id = Some("someone-else".into());
        let body = canonical_bytes(2, &original.prev, &forged).unwrap();
        put(&log, 2, &hash_hex(&body), &body);
        let report = log.verify().unwrap();
        let (seq, why) = report.first_bad.unwrap();
        assert_eq!(
            seq, 3,
            "record 2 itself is self-consistent; the link from 3 breaks"
        );
        assert!(why.contains("prev"), "{why}");
    }

    #[test]
    fn detects_garbage_value() {
        let (_d, _db, log) = filled(3);
        log.tree
            .insert(1u64.to_be_bytes(), b"short".to_vec())
            .unwrap();
        assert_eq!(log.verify().unwrap().first_bad.unwrap().0, 1);
    }

    #[test]
    fn reopen_continues_chain() {
        let (dir, db, log) = filled(3);
        let head = log.head();
        drop(log);
        drop(db);
        // sled's background flusher holds the database (and its file lock) for a moment after
        // the last handle is dropped: retry the open for a while instead of failing on it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::Config::new().path(dir.path().join("db")).open() {
                Ok(db) => break db,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(e.to_string().contains("could not acquire lock"), "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        let log = AuditLog::open(&db).unwrap();
        assert_eq!(log.head(), head);
        log.append_batch(vec![ev(3, "u1", event::DELETE, &[])])
            .unwrap();
        log.append_batch(vec![ev(4, "u1", event::DELETE, &[])])
            .unwrap();
        assert_eq!(
            log.verify().unwrap(),
            VerifyReport {
                records: 5,
                first_bad: None
            }
        );
        let newest = log.query(&AuditFilter::default(), 2).unwrap();
        assert_eq!(newest[0].seq, 4);
        assert_eq!(newest[1].prev, head.1);
    }

    #[test]
    fn query_filters() {
        let (_d, db) = db();
        let log = AuditLog::open(&db).unwrap();
        log.append_batch(vec![
            ev(0, "alice", event::USER_AUTHENTICATION, &[]),
            ev(1, "alice", event::QUERY, &["1.1"]),
            ev(2, "bob", event::RETRIEVE, &["1.1", "2.2"]),
            ev(3, "alice", event::RETRIEVE, &["2.2"]),
            ev(4, "bob", event::EXPORT, &["3.3"]),
        ])
        .unwrap();
        let seqs = |f: AuditFilter, limit| -> Vec<u64> {
            log.query(&f, limit)
                .unwrap()
                .iter()
                .map(|r| r.seq)
                .collect()
        };
        assert_eq!(seqs(AuditFilter::default(), 10), vec![4, 3, 2, 1, 0]);
        assert_eq!(seqs(AuditFilter::default(), 2), vec![4, 3]);
        assert_eq!(seqs(AuditFilter::default(), 0), Vec::<u64>::new());
        let user = |u: &str| AuditFilter {
            user_id: Some(u.into()),
            ..Default::default()
        };
        assert_eq!(seqs(user("alice"), 10), vec![3, 1, 0]);
        assert_eq!(seqs(user("alice"), 1), vec![3]);
        assert_eq!(seqs(user("nobody"), 10), Vec::<u64>::new());
        let study = AuditFilter {
            study: Some("2.2".into()),
            ..Default::default()
        };
        assert_eq!(seqs(study, 10), vec![3, 2]);
        let retrieve = AuditFilter {
            event: Some(event::INSTANCES_ACCESSED.into()),
            ..Default::default()
        };
        assert_eq!(seqs(retrieve, 10), vec![3, 2]);
        let window = AuditFilter {
            since_ms: Some(1_001),
            until_ms: Some(1_004),
            ..Default::default()
        };
        assert_eq!(seqs(window, 10), vec![3, 2, 1]);
        let combined = AuditFilter {
            user_id: Some("bob".into()),
            study: Some("1.1".into()),
            event: Some(event::RETRIEVE.into()),
            since_ms: Some(1_002),
            until_ms: Some(1_003),
        };
        assert_eq!(seqs(combined, 10), vec![2]);
    }

    #[test]
    fn outcome_serializes_lowercase() {
        assert_eq!(
            serde_json::to_string(&Outcome::Refused).unwrap(),
            r#""refused""#
        );
        let e = AuditEvent::new(event::USER_AUTHENTICATION, "login", Outcome::Failure);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["outcome"], "failure");
        assert_eq!(v["event"], "110114");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sink_batches_and_flushes() {
        let (_d, db) = db();
        let log = Arc::new(AuditLog::open(&db).unwrap());
        let sink = log.clone().spawn_writer();
        let other = sink.clone();
        for i in 0..600 {
            let s = if i % 2 == 0 { &sink } else { &other };
            s.record(ev(i, "u", event::QUERY, &[]));
        }
        sink.flush().await.unwrap();
        assert!(sink.healthy());
        let report = log.verify().unwrap();
        assert_eq!(
            report,
            VerifyReport {
                records: 600,
                first_bad: None
            }
        );
        // Order of recording is preserved in the chain.
        let all = log.query(&AuditFilter::default(), 1_000).unwrap();
        assert_eq!(all.first().unwrap().event.time_ms, 1_000 + 599);
        assert_eq!(all.last().unwrap().event.time_ms, 1_000);
        // A flush with nothing pending returns at once.
        other.flush().await.unwrap();
    }

    #[tokio::test]
    async fn sink_writes_within_interval_without_flush() {
        let (_d, db) = db();
        let log = Arc::new(AuditLog::open(&db).unwrap());
        let sink = log.clone().spawn_writer();
        let start = std::time::Instant::now();
        sink.record(ev(0, "u", event::QUERY, &[]));
        // No flush: the writer's batch timer alone gets the event written.
        while log.head().0 == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A lone event waits for the batch interval (it could still gather more).
        assert!(start.elapsed() >= BATCH_INTERVAL);
        assert!(sink.healthy());
        assert_eq!(log.verify().unwrap().records, 1);
    }

    #[tokio::test]
    async fn sink_writes_full_batch_early() {
        let (_d, db) = db();
        let log = Arc::new(AuditLog::open(&db).unwrap());
        let sink = log.clone().spawn_writer();
        for i in 0..BATCH_MAX as u64 {
            sink.record(ev(i, "u", event::QUERY, &[]));
        }
        sink.flush().await.unwrap();
        assert_eq!(log.verify().unwrap().records, BATCH_MAX as u64);
    }

    #[tokio::test]
    async fn sink_unhealthy_when_writes_fail() {
        let (_d, db) = db();
        let log = Arc::new(AuditLog::open(&db).unwrap());
        let sink = log.clone().spawn_writer();
        sink.record(ev(0, "u", event::QUERY, &[]));
        sink.flush().await.unwrap();
        assert!(sink.healthy());

        log.fail_writes.store(true, Ordering::SeqCst);
        sink.record(ev(1, "u", event::QUERY, &[]));
        assert!(matches!(sink.flush().await, Err(AuditError::Unhealthy)));
        assert!(!sink.healthy());

        // Unhealthy is sticky even once the store recovers; the chain stays valid.
        log.fail_writes.store(false, Ordering::SeqCst);
        sink.record(ev(2, "u", event::QUERY, &[]));
        assert!(sink.flush().await.is_err());
        assert!(!sink.healthy());
        assert_eq!(
            log.verify().unwrap(),
            VerifyReport {
                records: 2,
                first_bad: None
            }
        );
    }

    #[test]
    fn sink_unhealthy_when_writer_gone() {
        let (_d, db) = db();
        let log = Arc::new(AuditLog::open(&db).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sink = rt.block_on(async { log.clone().spawn_writer() });
        assert!(sink.healthy());
        // Dropping the runtime drops the writer task and its receiver.
        drop(rt);
        sink.record(ev(0, "u", event::QUERY, &[]));
        assert!(!sink.healthy());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(
            rt.block_on(sink.flush()),
            Err(AuditError::WriterGone)
        ));
    }

    #[tokio::test]
    async fn sink_unhealthy_when_queue_full() {
        // On a current-thread runtime the writer cannot run until we yield,
        // so the queue fills deterministically.
        let (_d, db) = db();
        let log = Arc::new(AuditLog::open(&db).unwrap());
        let sink = log.clone().spawn_writer();
        for i in 0..CHANNEL_CAPACITY as u64 {
            sink.record(ev(i, "u", event::QUERY, &[]));
        }
        assert!(sink.healthy());
        sink.record(ev(0, "u", event::QUERY, &[]));
        assert!(!sink.healthy());
        assert!(matches!(sink.flush().await, Err(AuditError::Unhealthy)));
        assert_eq!(log.verify().unwrap().records, CHANNEL_CAPACITY as u64);
    }
}
