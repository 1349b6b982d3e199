//! Chain-head checkpoints: what makes deleting the newest events of a chain, or a whole chain,
//! detectable (docs/audit.md, "Tamper evidence").
//!
//! A hash chain proves that what is there is intact, not that nothing is missing: cutting a chain's
//! tail, or deleting every row of a chain, leaves chains that verify. So the store remembers, for every
//! chain it appended to, the newest row it wrote (chain key, `event_id`, `event_hash`) and writes those
//! heads, every `interval` and when it closes, as one line of an append-only JSON-lines file that lives
//! outside the database — where whoever can rewrite the rows (the database owner, a superuser) cannot
//! rewrite it too. Each line is sealed with the chain's hash function (HMAC-SHA256 under the audit key
//! when one is configured, so a forged line is detected; plain SHA-256 otherwise, which only detects
//! accidental damage). The same line is logged at info (target `namegate::audit::checkpoint`), so a log
//! pipeline keeps a second copy.
//!
//! `namegate audit verify --checkpoints <file>` then requires every checkpointed head to be present
//! with the checkpointed hash: a missing head with the chain still present is a truncated chain, a
//! chain with no rows at all a deleted chain, a different hash a rewritten chain. What was appended
//! after the last checkpoint line is not covered: at most `interval` of events.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chain::{ChainHasher, HashAlgorithm, canonical_json};
use super::store::RawEventRow;

/// Default time between checkpoint lines.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// File name of the checkpoint file in the data directory.
pub const CHECKPOINT_FILE_NAME: &str = "audit-checkpoints.jsonl";
/// Version of the line format below.
pub const FORMAT_VERSION: u32 = 1;

/// One chain's newest row at checkpoint time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub chain: String,
    pub event_id: String,
    pub event_hash: String,
}

/// One line of the checkpoint file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub v: u32,
    /// When the line was written (RFC 3339).
    pub at: String,
    /// `sha256` or `hmac-sha256`: how `seal` was computed.
    pub alg: String,
    pub heads: Vec<Head>,
    /// `hex(H("" || canonical_json(line without seal)))`.
    #[serde(default)]
    pub seal: String,
}

impl Checkpoint {
    fn unsealed_text(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(m) = v.as_object_mut() {
            m.remove("seal");
        }
        canonical_json(&v)
    }

    fn seal_with(&self, hasher: &ChainHasher) -> Option<String> {
        let alg = HashAlgorithm::parse(&self.alg)?;
        hasher.rehash(alg, "", &self.unsealed_text())
    }
}

#[derive(Debug)]
struct State {
    /// Chain → newest (event_id, event_hash) appended since the last line.
    dirty: HashMap<String, (String, String)>,
    last_write: Instant,
    file: Option<File>,
}

/// Records chain heads after each commit and writes them out (see the module docs).
#[derive(Debug)]
pub struct Checkpointer {
    path: PathBuf,
    hasher: ChainHasher,
    interval: Duration,
    state: Mutex<State>,
}

impl Checkpointer {
    pub fn new(path: impl Into<PathBuf>, hasher: ChainHasher, interval: Duration) -> Self {
        Self {
            path: path.into(),
            hasher,
            interval,
            state: Mutex::new(State {
                dirty: HashMap::new(),
                last_write: Instant::now(),
                file: None,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Notes the rows of a committed append (in chain order) and writes a line when `interval` has
    /// passed since the last one.
    pub fn record(&self, rows: &[RawEventRow]) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        for r in rows {
            st.dirty.insert(
                r.chain_key().to_owned(),
                (r.event_id.clone(), r.event_hash.clone()),
            );
        }
        if st.last_write.elapsed() >= self.interval
            && let Err(e) = self.write_locked(&mut st)
        {
            tracing::error!(error = %e, path = %self.path.display(), "cannot write audit checkpoint");
        }
    }

    /// Writes the pending heads now (on close, and in tests).
    pub fn flush(&self) -> io::Result<()> {
        let Ok(mut st) = self.state.lock() else {
            return Ok(());
        };
        self.write_locked(&mut st)
    }

    fn write_locked(&self, st: &mut State) -> io::Result<()> {
        st.last_write = Instant::now();
        if st.dirty.is_empty() {
            return Ok(());
        }
        let mut heads: Vec<Head> = st
            .dirty
            .drain()
            .map(|(chain, (event_id, event_hash))| Head {
                chain,
                event_id,
                event_hash,
            })
            .collect();
        heads.sort_unstable_by(|a, b| a.chain.cmp(&b.chain));
        let mut cp = Checkpoint {
            v: FORMAT_VERSION,
            at: jiff::Timestamp::now().to_string(),
            alg: self.hasher.algorithm().as_str().to_owned(),
            heads,
            seal: String::new(),
        };
        cp.seal = self.hasher.hash("", &cp.unsealed_text());
        let mut line = serde_json::to_string(&cp).map_err(io::Error::other)?;
        line.push('\n');
        tracing::info!(target: "namegate::audit::checkpoint", checkpoint = %line.trim_end(), "audit chain heads");
        if st.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            st.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        if let Some(f) = st.file.as_mut() {
            f.write_all(line.as_bytes())?;
            f.sync_data()?;
        }
        Ok(())
    }
}

/// Why a checkpoint file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading checkpoint file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Heads to check, by chain, and the lines that could not be trusted.
#[derive(Debug, Default)]
pub struct Expected {
    /// Chain → the newest checkpointed head of each file that names it.
    pub heads: HashMap<String, Vec<Head>>,
    /// Lines whose seal does not match (forged or damaged), or that do not parse: `(file:line, why)`.
    pub bad_lines: Vec<(String, String)>,
    /// Lines sealed with HMAC that could not be checked for lack of the key.
    pub unverifiable_lines: u64,
}

/// Reads checkpoint files; within one file a later line's head of a chain replaces an earlier one.
pub fn load(paths: &[PathBuf], hasher: &ChainHasher) -> Result<Expected, CheckpointError> {
    let mut expected = Expected::default();
    for path in paths {
        let file = File::open(path).map_err(|source| CheckpointError::Io {
            path: path.clone(),
            source,
        })?;
        let mut newest: HashMap<String, Head> = HashMap::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| CheckpointError::Io {
                path: path.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let at = format!("{}:{}", path.display(), i + 1);
            let cp: Checkpoint = match serde_json::from_str(&line) {
                Ok(cp) => cp,
                Err(e) => {
                    expected
                        .bad_lines
                        .push((at, format!("not a checkpoint: {e}")));
                    continue;
                }
            };
            match cp.seal_with(hasher) {
                Some(s) if s == cp.seal => {}
                Some(_) => {
                    expected
                        .bad_lines
                        .push((at, "seal does not match (line forged or damaged)".into()));
                    continue;
                }
                None if HashAlgorithm::parse(&cp.alg).is_none() => {
                    expected
                        .bad_lines
                        .push((at, format!("unknown seal algorithm {:?}", cp.alg)));
                    continue;
                }
                // Sealed with HMAC, no key: its heads are still checked.
                None => expected.unverifiable_lines += 1,
            }
            for h in cp.heads {
                newest.insert(h.chain.clone(), h);
            }
        }
        for (chain, head) in newest {
            expected.heads.entry(chain).or_default().push(head);
        }
    }
    Ok(expected)
}
