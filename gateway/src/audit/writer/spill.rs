//! The spill file: an append-only JSON-lines file holding events the store could not take, in order,
//! until they are replayed. One event per line (the `AuditEvent` serde form); every append is one
//! `write` of whole lines followed by `fdatasync`, so an acknowledged append survives a crash, and a
//! crash during an append leaves at most one torn final line, which `open` cuts off.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};

use tokio::fs::File;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};

use crate::audit::event::AuditEvent;

/// A line of the spill file that does not parse (disk corruption, or a foreign edit).
#[derive(Debug)]
pub(super) struct BadLine {
    pub offset: u64,
    pub text: String,
    pub error: String,
}

/// The next events to replay, read from the current replay offset.
#[derive(Debug, Default)]
pub(super) struct Chunk {
    pub events: Vec<AuditEvent>,
    pub bad_lines: Vec<BadLine>,
    /// Offset just past the last line read.
    pub end: u64,
}

#[derive(Debug)]
pub(super) struct Spill {
    path: PathBuf,
    file: File,
    /// Length of the file: everything appended and not yet cleared.
    len: u64,
    /// Everything before this offset has been replayed into the store (in this process; after a
    /// restart replay starts at 0 again and the store skips events it already holds).
    replayed_to: u64,
}

impl Spill {
    /// Opens (creating it and its directory if missing) and cuts off a torn final line.
    pub async fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await?;
        }
        let std_file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        // One writer per spill file: two processes appending and replaying the same file would
        // interleave and replay each other's events. The lock is released when the file is closed
        // (also when the process dies).
        match std_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the spill file is locked by another process (each gateway needs its own spill path)",
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut file = File::from_std(std_file);
        let mut len = file.metadata().await?.len();
        if len > 0 {
            let complete = complete_prefix_len(&mut file, len).await?;
            if complete != len {
                tracing::warn!(
                    path = %path.display(),
                    discarded_bytes = len - complete,
                    "audit spill file ends in a torn line (crash during an append); cutting it off — \
                     that append was never acknowledged"
                );
                file.set_len(complete).await?;
                file.sync_all().await?;
                len = complete;
            }
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            len,
            replayed_to: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes currently in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether events remain to be replayed.
    pub fn has_unreplayed(&self) -> bool {
        self.replayed_to < self.len
    }

    /// The serialised size `events` would add.
    pub fn encode(events: &[AuditEvent]) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(events.len() * 512);
        for ev in events {
            serde_json::to_writer(&mut buf, ev).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        Ok(buf)
    }

    /// Appends already-encoded lines and syncs. On failure the file is cut back to its previous length
    /// (best effort) so a partial write never leaves a torn line in the middle.
    pub async fn append_encoded(&mut self, lines: &[u8]) -> io::Result<()> {
        let result = async {
            self.file.write_all(lines).await?;
            self.file.flush().await?;
            self.file.sync_data().await
        }
        .await;
        match result {
            Ok(()) => {
                self.len += lines.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.file.set_len(self.len).await {
                    tracing::error!(path = %self.path.display(), error = %cut, "could not cut back a failed spill append");
                }
                Err(e)
            }
        }
    }

    /// Reads up to `max` events from the replay offset.
    pub async fn read_chunk(&self, max: usize) -> io::Result<Chunk> {
        let mut file = File::open(&self.path).await?;
        file.seek(SeekFrom::Start(self.replayed_to)).await?;
        let mut reader = BufReader::new(file.take(self.len - self.replayed_to));
        let mut chunk = Chunk {
            end: self.replayed_to,
            ..Chunk::default()
        };
        let mut line = String::new();
        while chunk.events.len() < max {
            line.clear();
            let n = reader.read_line(&mut line).await?;
            if n == 0 {
                break;
            }
            let offset = chunk.end;
            chunk.end += n as u64;
            let text = line.trim_end_matches('\n');
            if text.is_empty() {
                continue;
            }
            match serde_json::from_str::<AuditEvent>(text) {
                Ok(ev) => chunk.events.push(ev),
                Err(e) => chunk.bad_lines.push(BadLine {
                    offset,
                    text: text.to_owned(),
                    error: e.to_string(),
                }),
            }
        }
        Ok(chunk)
    }

    /// Records that everything before `offset` is in the store.
    pub fn mark_replayed(&mut self, offset: u64) {
        self.replayed_to = offset.min(self.len);
    }

    /// Empties the file once everything in it has been replayed.
    pub async fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0).await?;
        self.file.sync_all().await?;
        self.len = 0;
        self.replayed_to = 0;
        Ok(())
    }
}

/// Length of the prefix of the file that ends with a newline (0 if there is none).
async fn complete_prefix_len(file: &mut File, len: u64) -> io::Result<u64> {
    // Scan backwards in blocks for the last '\n'.
    const BLOCK: u64 = 64 * 1024;
    let mut end = len;
    let mut buf = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let size = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).await?;
        file.read_exact(&mut buf[..size]).await?;
        if let Some(i) = buf[..size].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{EventOutcome, EventType};

    fn ev(n: u32) -> AuditEvent {
        AuditEvent::new(
            EventType::SignalReceived,
            EventOutcome::Success,
            format!("rr-{n}"),
        )
    }

    #[tokio::test]
    async fn append_read_clear_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/spill.jsonl");
        let mut spill = Spill::open(&path).await.unwrap();
        assert!(spill.is_empty());
        let events: Vec<_> = (0..5).map(ev).collect();
        spill
            .append_encoded(&Spill::encode(&events[..3]).unwrap())
            .await
            .unwrap();
        spill
            .append_encoded(&Spill::encode(&events[3..]).unwrap())
            .await
            .unwrap();
        let chunk = spill.read_chunk(2).await.unwrap();
        assert_eq!(chunk.events, events[..2]);
        spill.mark_replayed(chunk.end);
        let chunk = spill.read_chunk(10).await.unwrap();
        assert_eq!(chunk.events, events[2..]);
        assert!(chunk.bad_lines.is_empty());
        spill.mark_replayed(chunk.end);
        assert!(!spill.has_unreplayed());

        // A crash mid-append: a torn last line is cut off on open, the rest survives.
        drop(spill);
        let mut raw = std::fs::read(&path).unwrap();
        raw.extend_from_slice(b"{\"event_id\":\"01");
        std::fs::write(&path, &raw).unwrap();
        let mut spill = Spill::open(&path).await.unwrap();
        assert_eq!(spill.len(), raw.len() as u64 - 15);
        assert_eq!(spill.read_chunk(100).await.unwrap().events, events);
        spill.clear().await.unwrap();
        assert!(spill.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[tokio::test]
    async fn one_process_per_spill_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill.jsonl");
        let first = Spill::open(&path).await.unwrap();
        let err = Spill::open(&path).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        drop(first);
        Spill::open(&path).await.unwrap();
    }

    #[tokio::test]
    async fn bad_lines_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill.jsonl");
        let good = Spill::encode(&[ev(1)]).unwrap();
        let mut raw = b"not json\n".to_vec();
        raw.extend_from_slice(&good);
        std::fs::write(&path, &raw).unwrap();
        let spill = Spill::open(&path).await.unwrap();
        let chunk = spill.read_chunk(10).await.unwrap();
        assert_eq!(chunk.events.len(), 1);
        assert_eq!(chunk.bad_lines.len(), 1);
        assert_eq!(chunk.bad_lines[0].offset, 0);
        assert_eq!(chunk.end, raw.len() as u64);
    }
}
