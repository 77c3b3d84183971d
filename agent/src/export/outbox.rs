//! The outbox: encoded reports waiting for the collector's ack, bounded in
//! bytes, optionally kept in a directory so that they survive a restart of
//! the agent. When a new report does not fit, the oldest go first; each
//! dropped report is counted and the count rides in band on the next report
//! built ([`Outbox::take_dropped`]). Sequence numbers come from here too, so
//! that a restarted agent with the same directory goes on numbering where it
//! stopped.
//!
//! A report the outbox drops may itself carry the count of reports dropped
//! before it: that count goes back into the one to report next, so that the
//! sum of the counts that reach the collector is exactly the number of
//! reports dropped.
//!
//! On disk: one file per report, `<sequence, 20 digits>.report`, written to
//! a temporary name, synced and renamed; `next_sequence` holds the next
//! number to hand out, updated the same way before the number is used.
//!
//! The same type keeps the reports an agent writes to remote-write stores
//! itself until every store is done with them ([`Outbox::open_remote_write`]):
//! its drops ride in band as `stage=remote_write`, `reason=outbox_full`.

use std::{
    collections::VecDeque,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use sonde_proto::v1::AgentReport;

/// Default bound: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
const SUFFIX: &str = ".report";
const NEXT_SEQUENCE: &str = "next_sequence";
/// The loss records the outbox's counts ride in (`sonde.agent.dropped`).
pub const STAGE: &str = "outbox";
/// A report dropped to make room, or larger than the whole bound.
pub const REASON_FULL: &str = "outbox_full";
/// A report the collector refused for good.
pub const REASON_REFUSED: &str = "refused_by_collector";

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// A file of the outbox directory could not be read or written.
    #[error("outbox {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// `next_sequence` holds something else than a sequence number.
    #[error("outbox {path}: not a sequence number: '{text}'")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
    /// Every sequence number up to `u64::MAX` was handed out.
    #[error("outbox: sequence numbers exhausted")]
    Exhausted,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_owned(),
        source,
    }
}

struct Entry {
    sequence: u64,
    bytes: Vec<u8>,
}

/// Whose acks an outbox waits for, which decides the loss records its
/// counts ride in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The collector's (`stage=outbox`).
    Collector,
    /// The remote-write stores' (`stage=remote_write`).
    RemoteWrite,
}

impl Kind {
    /// The loss stage its counts ride in.
    fn stage(self) -> &'static str {
        match self {
            Self::Collector => STAGE,
            Self::RemoteWrite => sonde_proto::remote_write::sender::STAGE,
        }
    }
}

/// Reports not yet acked.
pub struct Outbox {
    kind: Kind,
    max_bytes: u64,
    entries: VecDeque<Entry>,
    bytes: u64,
    dir: Option<PathBuf>,
    next_sequence: u64,
    dropped_unreported: u64,
    dropped_total: u64,
    refused_unreported: u64,
}

impl Outbox {
    /// An outbox in memory only; numbering starts at `first_sequence`.
    pub fn in_memory(max_bytes: u64, first_sequence: u64) -> Self {
        Self {
            kind: Kind::Collector,
            max_bytes,
            entries: VecDeque::new(),
            bytes: 0,
            dir: None,
            next_sequence: first_sequence,
            dropped_unreported: 0,
            dropped_total: 0,
            refused_unreported: 0,
        }
    }

    /// Opens (or creates) an outbox in `dir` and loads what a previous run
    /// left; numbering goes on from there, or starts at `first_sequence` in
    /// a new directory. Reports beyond the bound are dropped and counted.
    pub fn open(dir: &Path, max_bytes: u64, first_sequence: u64) -> Result<Self, OutboxError> {
        Self::open_as(Kind::Collector, dir, max_bytes, first_sequence)
    }

    /// [`Outbox::open`] for the reports the agent writes to remote-write
    /// stores itself: each is acked once every store is done with it, and
    /// its drops are counted as `stage=remote_write`, `reason=outbox_full`.
    pub fn open_remote_write(
        dir: &Path,
        max_bytes: u64,
        first_sequence: u64,
    ) -> Result<Self, OutboxError> {
        Self::open_as(Kind::RemoteWrite, dir, max_bytes, first_sequence)
    }

    fn open_as(
        kind: Kind,
        dir: &Path,
        max_bytes: u64,
        first_sequence: u64,
    ) -> Result<Self, OutboxError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            // A name that is not a report's (u64::MAX included) is not ours.
            if let Some(sequence) = record_sequence(name) {
                found.push((sequence, path));
            } else if name.ends_with(".tmp") {
                // A write that did not finish: never acked, never complete.
                let _ = fs::remove_file(&path);
            }
        }
        found.sort_unstable();
        let seq_path = dir.join(NEXT_SEQUENCE);
        let persisted = match fs::read_to_string(&seq_path) {
            Ok(text) => Some(
                parse_next_sequence(&text).ok_or_else(|| OutboxError::Corrupt {
                    path: seq_path.clone(),
                    text: text.trim().to_owned(),
                })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&seq_path)(e)),
        };
        // record_sequence refuses u64::MAX, so the one after the last file
        // is a number.
        let after_files = found.last().and_then(|(s, _)| s.checked_add(1));
        let next_sequence = persisted
            .into_iter()
            .chain(after_files)
            .max()
            .unwrap_or(first_sequence);
        let mut outbox = Self {
            kind,
            dir: Some(dir.to_owned()),
            next_sequence,
            ..Self::in_memory(max_bytes, first_sequence)
        };
        for (sequence, path) in found {
            let bytes = fs::read(&path).map_err(io(&path))?;
            outbox.admit(sequence, bytes)?;
        }
        Ok(outbox)
    }

    /// The next sequence number a disk outbox in `dir` hands out, as its
    /// files say (`None` for a new or unreadable directory).
    pub fn persisted_next_sequence(dir: &Path) -> Option<u64> {
        let persisted = fs::read_to_string(dir.join(NEXT_SEQUENCE))
            .ok()
            .and_then(|t| parse_next_sequence(&t));
        let after_files = fs::read_dir(dir)
            .ok()?
            .filter_map(|e| record_sequence(e.ok()?.file_name().to_str()?))
            .max()
            .map(|s| s + 1);
        persisted.into_iter().chain(after_files).max()
    }

    /// Hands out the next sequence number (persisted first when on disk).
    pub fn next_sequence(&mut self) -> Result<u64, OutboxError> {
        let seq = self.next_sequence;
        let next = seq.checked_add(1).ok_or(OutboxError::Exhausted)?;
        if let Some(dir) = &self.dir {
            write_atomically(&dir.join(NEXT_SEQUENCE), next.to_string().as_bytes())?;
        }
        self.next_sequence = next;
        Ok(seq)
    }

    /// Adds a report (written to disk first when on disk). The oldest
    /// reports make room; a report larger than the whole bound is dropped
    /// itself. Every dropped report is counted.
    pub fn push(&mut self, sequence: u64, bytes: Vec<u8>) -> Result<(), OutboxError> {
        if bytes.len() as u64 > self.max_bytes {
            self.count_dropped(1);
            self.recarry(&bytes);
            return Ok(());
        }
        if let Some(dir) = &self.dir {
            write_atomically(&dir.join(file_name(sequence)), &bytes)?;
        }
        self.admit(sequence, bytes)
    }

    fn admit(&mut self, sequence: u64, bytes: Vec<u8>) -> Result<(), OutboxError> {
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            self.count_dropped(1);
            self.recarry(&bytes);
            return self.remove_file(sequence);
        }
        while self.bytes + size > self.max_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.bytes.len() as u64;
            self.count_dropped(1);
            self.recarry(&old.bytes);
            self.remove_file(old.sequence)?;
        }
        self.bytes += size;
        self.entries.push_back(Entry { sequence, bytes });
        Ok(())
    }

    fn count_dropped(&mut self, n: u64) {
        self.dropped_unreported += n;
        self.dropped_total += n;
    }

    /// A dropped report's own outbox counts (reports dropped or refused
    /// before it) would go with it: they are carried by the next report
    /// instead.
    fn recarry(&mut self, bytes: &[u8]) {
        let (dropped, refused) = carried(bytes, self.kind.stage());
        self.dropped_unreported += dropped;
        self.refused_unreported += refused;
    }

    fn remove_file(&self, sequence: u64) -> Result<(), OutboxError> {
        if let Some(dir) = &self.dir {
            let path = dir.join(file_name(sequence));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Ok(())
    }

    /// The collector has `sequence`: forget it. `false` if it was not here
    /// (acked before, or dropped).
    pub fn ack(&mut self, sequence: u64) -> Result<bool, OutboxError> {
        let Some(i) = self.entries.iter().position(|e| e.sequence == sequence) else {
            return Ok(false);
        };
        if let Some(e) = self.entries.remove(i) {
            self.bytes -= e.bytes.len() as u64;
        }
        self.remove_file(sequence)?;
        Ok(true)
    }

    /// The oldest report after `cursor` (all reports when `None`), to send next.
    pub fn after(&self, cursor: Option<u64>) -> Option<(u64, &[u8])> {
        self.entries
            .iter()
            .find(|e| cursor.is_none_or(|c| e.sequence > c))
            .map(|e| (e.sequence, e.bytes.as_slice()))
    }

    /// Reports dropped since the last call: the count to report in band.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped_unreported)
    }

    /// The collector refused the oldest report for good (malformed or too
    /// large): resending it would block every later one, so it goes, and is
    /// counted. Returns its sequence.
    pub fn drop_refused(&mut self) -> Result<Option<u64>, OutboxError> {
        let Some(e) = self.entries.pop_front() else {
            return Ok(None);
        };
        self.bytes -= e.bytes.len() as u64;
        self.refused_unreported += 1;
        self.dropped_total += 1;
        self.recarry(&e.bytes);
        self.remove_file(e.sequence)?;
        Ok(Some(e.sequence))
    }

    /// Reports refused by the collector since the last call.
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused_unreported)
    }

    /// Reports dropped since the outbox was opened.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Reports waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The outbox counts an encoded report carries in its loss records of
/// `stage`: (`outbox_full`, `refused_by_collector`). Bytes that do not
/// decode carry none.
fn carried(bytes: &[u8], stage: &str) -> (u64, u64) {
    let Ok(report) = <AgentReport as prost::Message>::decode(bytes) else {
        return (0, 0);
    };
    report
        .losses
        .iter()
        .filter(|l| l.stage == stage)
        .fold((0, 0), |(full, refused), l| match l.reason.as_str() {
            REASON_FULL => (full + l.count, refused),
            REASON_REFUSED => (full, refused + l.count),
            _ => (full, refused),
        })
}

/// The file name of report `sequence`.
pub fn file_name(sequence: u64) -> String {
    format!("{sequence:020}{SUFFIX}")
}

/// The sequence number of a report file name (`<digits>.report`); `None`
/// for any other name, and for `u64::MAX` (no number could follow it).
pub fn record_sequence(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().filter(|&s| s < u64::MAX)
}

/// Parses `next_sequence`'s text: a decimal number, surrounding white
/// space allowed; `None` otherwise, and for `u64::MAX` (nothing follows it).
pub fn parse_next_sequence(text: &str) -> Option<u64> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().filter(|&s| s < u64::MAX)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(n: usize) -> Vec<u8> {
        vec![7; n]
    }

    #[test]
    fn oldest_go_first_and_the_loss_is_counted_once() {
        let mut o = Outbox::in_memory(100, 1);
        for _ in 0..3 {
            let seq = o.next_sequence().unwrap();
            o.push(seq, report(40)).unwrap();
        }
        // 120 bytes do not fit in 100: report 1 went.
        assert_eq!(o.len(), 2);
        assert_eq!(o.bytes(), 80);
        assert_eq!(o.after(None).unwrap().0, 2);
        assert_eq!(o.take_dropped(), 1);
        assert_eq!(o.take_dropped(), 0, "reported once");
        // A report larger than the bound is dropped itself.
        o.push(4, report(101)).unwrap();
        assert_eq!((o.len(), o.take_dropped(), o.dropped_total()), (2, 1, 2));
    }

    fn carrying(full: u64, refused: u64) -> Vec<u8> {
        padded(full, refused, 0)
    }

    /// A report carrying these counts, `pad` bytes longer.
    fn padded(full: u64, refused: u64, pad: usize) -> Vec<u8> {
        use sonde_proto::v1::LossRecord;
        let record = |reason: &str, count| LossRecord {
            stage: STAGE.into(),
            probe: "all".into(),
            reason: reason.into(),
            count,
            ..Default::default()
        };
        prost::Message::encode_to_vec(&AgentReport {
            losses: vec![record(REASON_FULL, full), record(REASON_REFUSED, refused)],
            strings: vec!["x".repeat(pad)],
            ..Default::default()
        })
    }

    #[test]
    fn the_counts_a_dropped_report_carried_go_to_the_next() {
        let one = carrying(3, 1).len() as u64;
        let mut o = Outbox::in_memory(one + 10, 1);
        o.push(1, carrying(3, 1)).unwrap();
        o.push(2, carrying(0, 0)).unwrap();
        // Report 1 went, and with it its own count of three dropped before
        // it and one refused: all of it is to be reported again.
        assert_eq!(o.after(None).unwrap().0, 2);
        assert_eq!((o.take_dropped(), o.take_refused()), (4, 1));
        // The same for a refused report, and for one too large to keep.
        assert_eq!(o.drop_refused().unwrap(), Some(2));
        o.push(3, carrying(2, 0)).unwrap();
        assert_eq!(o.drop_refused().unwrap(), Some(3));
        assert_eq!((o.take_dropped(), o.take_refused()), (2, 2));
        o.push(4, padded(5, 0, 20)).unwrap();
        assert_eq!(o.len(), 0);
        assert_eq!((o.take_dropped(), o.dropped_total()), (6, 4));
    }

    #[test]
    fn a_refused_report_goes_and_is_counted_apart() {
        let mut o = Outbox::in_memory(1000, 1);
        for _ in 0..2 {
            let seq = o.next_sequence().unwrap();
            o.push(seq, report(10)).unwrap();
        }
        assert_eq!(o.drop_refused().unwrap(), Some(1));
        assert_eq!((o.len(), o.bytes()), (1, 10));
        assert_eq!(
            (o.take_refused(), o.take_dropped(), o.dropped_total()),
            (1, 0, 1)
        );
        assert_eq!(o.take_refused(), 0);
    }

    #[test]
    fn acks_and_cursor() {
        let mut o = Outbox::in_memory(1000, 10);
        for _ in 0..3 {
            let seq = o.next_sequence().unwrap();
            o.push(seq, report(1)).unwrap();
        }
        assert_eq!(o.after(Some(10)).unwrap().0, 11);
        assert_eq!(o.after(Some(12)), None);
        assert!(o.ack(11).unwrap());
        assert!(!o.ack(11).unwrap());
        assert_eq!(o.after(Some(10)).unwrap().0, 12);
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn names_and_numbers_of_the_directory() {
        assert_eq!(record_sequence(&file_name(42)), Some(42));
        assert_eq!(record_sequence("7.report"), Some(7));
        for name in ["+5.report", ".report", "x.report", "5.report.tmp", "5"] {
            assert_eq!(record_sequence(name), None, "{name}");
        }
        assert_eq!(parse_next_sequence(" 7\n"), Some(7));
        assert_eq!(parse_next_sequence("+7"), None);
        // Nothing could follow u64::MAX: such a file is not ours.
        assert_eq!(record_sequence(&file_name(u64::MAX)), None);
        assert_eq!(parse_next_sequence(&u64::MAX.to_string()), None);
    }

    #[test]
    fn the_last_number_is_refused_not_wrapped() {
        // The u64::MAX + 1 that these files led to overflowed.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(file_name(u64::MAX)), b"x").unwrap();
        let mut o = Outbox::open(dir.path(), 100, 1).unwrap();
        assert_eq!((o.len(), o.next_sequence().unwrap()), (0, 1));
        fs::write(dir.path().join(NEXT_SEQUENCE), u64::MAX.to_string()).unwrap();
        assert!(matches!(
            Outbox::open(dir.path(), 100, 1),
            Err(OutboxError::Corrupt { .. })
        ));
        let mut last = Outbox::in_memory(100, u64::MAX);
        assert!(matches!(last.next_sequence(), Err(OutboxError::Exhausted)));
    }

    #[test]
    fn a_disk_outbox_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut o = Outbox::open(dir.path(), 1000, 500).unwrap();
            assert_eq!(
                Outbox::persisted_next_sequence(dir.path()),
                None,
                "a new directory"
            );
            for n in 0..4 {
                let seq = o.next_sequence().unwrap();
                o.push(seq, report(10 + n)).unwrap();
            }
            assert!(o.ack(501).unwrap());
            // A number handed out but never written leaves a hole, no more.
            o.next_sequence().unwrap();
            fs::write(dir.path().join("junk.tmp"), b"half").unwrap();
        }
        assert_eq!(
            Outbox::persisted_next_sequence(dir.path()),
            Some(505),
            "a previous run numbered from here"
        );
        let mut o = Outbox::open(dir.path(), 1000, 1).unwrap();
        let seqs: Vec<u64> = o.entries.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, vec![500, 502, 503]);
        assert_eq!(o.after(Some(500)).unwrap().1.len(), 12);
        assert_eq!(o.next_sequence().unwrap(), 505);
        assert!(!dir.path().join("junk.tmp").exists());
        // Reopened with a smaller bound: the oldest are dropped and counted.
        drop(o);
        let mut o = Outbox::open(dir.path(), 26, 1).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o.take_dropped(), 1);
        assert!(!dir.path().join(file_name(500)).exists());
    }
}
