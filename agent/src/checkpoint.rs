//! The checkpoint of an agent whose probes are pinned: after each window,
//! the kernel's counts at its end, its sequence number and the pin
//! manifest. A restarted agent that adopts the pinned programs resumes from
//! it, so the window spanning the restart holds every event of the restart
//! once; when it cannot, the first window says why and is incomplete.
//!
//! Written after the window is handed to the sinks. A crash between the
//! two leaves the checkpoint one window behind: with a disk outbox the
//! restarted agent sees that (its next sequence is not the checkpoint's
//! plus one) and does not resume, flagging the gap instead of counting a
//! window twice. With a memory outbox the unacked windows are lost with the
//! process anyway; the one case left is a window acked in the microseconds
//! between the two writes, which would be counted again.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    model::Restart,
    probes::{pin::Manifest, Probes, Reading},
    sampler::Resume,
};

/// The file in the state directory.
pub const FILE: &str = "kernel-checkpoint.json";

/// Changes when the meaning of a checkpoint changes.
const FORMAT: &str = "sonde-checkpoint/1";

/// What a window leaves for the next agent (as read back).
#[derive(Debug, Deserialize)]
pub struct Checkpoint {
    /// `FORMAT`.
    pub format: String,
    /// The pins the counts were read from.
    pub manifest: Manifest,
    /// Sequence number of the window.
    pub sequence: u64,
    /// End of the window, Unix time in nanoseconds.
    pub window_end_unix_ns: u64,
    /// The kernel's counts at its end.
    pub reading: Reading,
}

/// The checkpoint file in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The last checkpoint, if there is a usable one; an unreadable one is
/// reported and ignored (the first window then says so).
pub fn load(state_dir: &Path) -> Result<Option<Checkpoint>, String> {
    let path = path(state_dir);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    match serde_json::from_slice::<Checkpoint>(&text) {
        Ok(c) if c.format == FORMAT => Ok(Some(c)),
        Ok(c) => Err(format!(
            "{}: format {} is not {FORMAT}",
            path.display(),
            c.format
        )),
        Err(e) => Err(format!("{}: not a checkpoint: {e}", path.display())),
    }
}

/// A [`Checkpoint`] as written: borrowed, so that a window's counts are
/// not copied to be saved.
#[derive(Serialize)]
struct Written<'a> {
    format: &'a str,
    manifest: &'a Manifest,
    sequence: u64,
    window_end_unix_ns: u64,
    reading: &'a Reading,
}

/// Writes the checkpoint of the window just closed, atomically (temporary
/// file, fsync, rename); `None` when the probes are not pinned.
pub fn save(
    state_dir: &Path,
    probes: &Probes,
    sequence: u64,
    window_end_unix_ns: u64,
    reading: &Reading,
) -> Option<std::io::Result<()>> {
    let manifest = probes.manifest()?;
    let written = Written {
        format: FORMAT,
        manifest: &manifest,
        sequence,
        window_end_unix_ns,
        reading,
    };
    let path = path(state_dir);
    let tmp = path.with_extension("json.tmp");
    let write = || {
        let mut file = std::fs::File::create(&tmp)?;
        let mut out = std::io::BufWriter::new(&mut file);
        serde_json::to_writer(&mut out, &written)?;
        out.flush()?;
        drop(out);
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    Some(write())
}

/// The first window of an agent that follows another without pinned
/// probes: what the kernel saw between the two is in no window.
pub fn unwatched() -> Resume {
    Resume {
        baseline: None,
        restart: Restart {
            follows_sequence: None,
            gap: Some(
                "kernel events since the last agent stopped were not read (--pin keeps the probes counting)".into(),
            ),
        },
    }
}

/// How the first window starts, from what the probes found pinned, the
/// checkpoint, and the outbox's next sequence number when it is on disk.
/// `None` when the agent does not pin.
pub fn resume(
    probes: &Probes,
    checkpoint: Result<Option<Checkpoint>, String>,
    outbox_next_sequence: Option<u64>,
) -> Option<Resume> {
    let outcome = probes.pin_outcome()?;
    let manifest = probes.manifest()?;
    let fresh = |gap: String| Resume {
        baseline: None,
        restart: Restart {
            follows_sequence: None,
            gap: Some(gap),
        },
    };
    let checkpoint = match checkpoint {
        Ok(Some(c)) => c,
        // Nothing pinned before and nothing to resume: a first start.
        Ok(None) if outcome.reused == 0 && outcome.replaced == 0 => {
            return None
        }
        Ok(None) => {
            return Some(fresh(
                "restarted without a checkpoint of the last run: what its probes counted after its last window is not in any window".into(),
            ))
        }
        Err(why) => return Some(fresh(format!("the last run's checkpoint is unusable ({why})"))),
    };
    if checkpoint.manifest.maps != manifest.maps {
        let why = if outcome.recreated.is_empty() {
            "the pinned maps are not the ones of the last run's checkpoint".to_owned()
        } else {
            format!(
                "pinned maps with another layout were recreated ({})",
                outcome.recreated.join(", ")
            )
        };
        return Some(fresh(format!("{why}: the restart's counts are lost")));
    }
    if let Some(next) = outbox_next_sequence {
        if next != checkpoint.sequence + 1 {
            return Some(fresh(format!(
                "the last run stopped between sending window {} and recording its checkpoint (window {}): resuming would count a window twice",
                next.saturating_sub(1),
                checkpoint.sequence
            )));
        }
    }
    let gap = (!outcome.adopted).then(|| {
        "the probes were replaced at restart (another object, options or links): events while they were swapped were not counted".to_owned()
    });
    Some(Resume {
        baseline: Some((checkpoint.reading, checkpoint.window_end_unix_ns)),
        restart: Restart {
            follows_sequence: Some(checkpoint.sequence),
            gap,
        },
    })
}
