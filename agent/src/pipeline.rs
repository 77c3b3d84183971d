//! The agent's pipeline, as a type: `sonde agent` builds an [`AgentConfig`]
//! from its flags, starts an [`Agent`], asks it for one window after
//! another and prints them; what happens each window lives here.
//!
//! Each window: read the kernel's maps (the sampler's tick), measure the
//! agent's cost and apply the overhead budget, evaluate the SLOs, hand the
//! window to the sinks (collector outbox, OTLP, Prometheus, remote write)
//! and the local socket, then write the checkpoint. What a person should
//! be told on the way (a family shed, a checkpoint that failed) is a
//! [`Note`], handed to the caller as it happens.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use sonde_common::family::Family;
use sonde_proto::v1::{ExplainAnswer, ExplainRequest};
use sonde_slo::spec::SloSpec;

use crate::{
    budget::{Action, BudgetConfig, Governor, Meter},
    checkpoint, explain,
    export::{outbox::Outbox, SinkConfig, SinkError, Sinks},
    local::server::{LocalServer, ServerError},
    model::{reasons, LossRecord, ProbeState, ProbeStatus, Snapshot},
    probes::{
        pin::{Manifest, PinOutcome},
        LoadError, ProbeOptions, Probes, ReadError,
    },
    sampler::{Resume, Sampler, SamplerOptions},
    slo::{Slos, StateError},
};

/// How often events are read between windows for socket clients.
const EVENT_POLL: Duration = Duration::from_millis(250);

/// What the agent runs with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Length of a window.
    pub interval: Duration,
    /// The probes to load (the SLOs' latency thresholds and the pins are
    /// added by [`Agent::start`]).
    pub probes: ProbeOptions,
    /// Where pod names come from.
    pub kubelet_pods_dir: PathBuf,
    /// Where every window goes besides the caller.
    pub sinks: SinkConfig,
    /// The SLOs to evaluate.
    pub slos: Vec<SloSpec>,
    /// Where the SLO history and, with pins, the kernel checkpoint are kept.
    pub state_dir: PathBuf,
    /// Pin the probes' maps and links under this bpffs directory, and
    /// resume from the last agent's checkpoint.
    pub pin: Option<PathBuf>,
    /// Serve windows and events on this local Unix socket.
    pub socket: Option<PathBuf>,
    /// The most the agent may cost, in percent of one CPU core.
    pub overhead_budget_percent: Option<f64>,
    /// How long the kernel's program statistics are sampled at the start
    /// of each window (at most half the interval; only with a budget).
    pub overhead_sample: Duration,
}

/// Why the agent could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory cannot be created.
    #[error(
        "cannot create the state directory {}: {source}; pass a writable one to --state-dir",
        .dir.display()
    )]
    StateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The SLO state cannot be read at start.
    #[error(transparent)]
    Slos(#[from] StateError),
    /// The local socket cannot be served.
    #[error(transparent)]
    Socket(#[from] ServerError),
    /// The probes cannot be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// No family attached.
    #[error("no probe could attach ({}); run `sonde doctor` for the cause", reasons(.statuses))]
    NoProbe {
        /// Every family's status, with why it did not attach.
        statuses: Vec<ProbeStatus>,
    },
    /// The sinks cannot start.
    #[error(transparent)]
    Sinks(#[from] SinkError),
    /// The kernel's maps cannot be read.
    #[error("reading the probes' maps")]
    Read(#[source] ReadError),
    /// The SLO state cannot be kept.
    #[error("keeping the SLO state")]
    SloState(#[source] StateError),
    /// A window could not be handed to the sinks.
    #[error("handing the window to the sinks")]
    Window(#[source] SinkError),
}

/// Something the agent tells its operator, as it happens.
#[derive(Debug)]
pub enum Note<'a> {
    /// A family did not attach, and why.
    Unavailable(&'a ProbeStatus),
    /// With pins: what was found under the pin directory and done, and how
    /// the first window starts.
    Pins {
        /// What was found and done.
        outcome: &'a PinOutcome,
        /// How the first window joins the last run's, if it does.
        resume: Option<&'a Resume>,
    },
    /// The local socket serves windows and events.
    Serving(&'a Path),
    /// The Prometheus endpoint listens.
    Prometheus(SocketAddr),
    /// The first window is open: every family's state.
    Ready(&'a [ProbeStatus]),
    /// The budget shed a family, and why.
    Shed {
        /// The family.
        family: Family,
        /// Why, with the figures.
        why: &'a str,
    },
    /// The budget attached a shed family again.
    Restored {
        /// The family.
        family: Family,
        /// Its state now (`None` if it could not be attached again).
        state: Option<ProbeState>,
    },
    /// The checkpoint could not be written (said once until it can again).
    CheckpointFailed {
        /// The state directory.
        dir: &'a Path,
        /// Why.
        error: &'a std::io::Error,
    },
}

/// A closed window and its sequence number.
#[derive(Debug)]
pub struct WindowOutcome {
    /// The window's sequence number (the collector's, with one).
    pub sequence: u64,
    /// The window.
    pub snapshot: Snapshot,
}

/// What was still undelivered when the agent stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Windows the remote-write stores did not take in time.
    pub unwritten: usize,
    /// Reports kept in the outbox for the remote-write stores (the next
    /// start sends them).
    pub kept: usize,
    /// Reports the collector did not ack in time.
    pub unacked: usize,
}

/// The running agent: its probes, budget, SLOs, sinks and socket.
pub struct Agent {
    sampler: Sampler,
    meter: Meter,
    governor: Option<(Governor, f64)>,
    slos: Slos,
    sinks: Sinks,
    local: Option<LocalServer>,
    state_dir: PathBuf,
    checkpoint_failed: bool,
    ticks: tokio::time::Interval,
    // Socket clients get events as they happen, not at the window's close.
    polls: tokio::time::Interval,
    /// Events of the current window already sent to socket clients.
    sent_events: usize,
    /// The latest windows as `sonde explain` reads them (kept with SLOs or
    /// a collector): a firing SLO's alert carries its explanation over
    /// them, and the collector's explain requests are answered from them.
    recent: Arc<Mutex<VecDeque<explain::Window>>>,
}

/// The collector's explain request (`sonde fleet explain --cgroup/--pod/
/// --unit`, or `--slo` with `--windows`) answered from the agent's recent
/// windows; neither an explanation nor an error when the node has no SLO
/// of that name.
fn explain_request(
    recent: &Mutex<VecDeque<explain::Window>>,
    request: &ExplainRequest,
) -> ExplainAnswer {
    let mut answer = ExplainAnswer {
        id: request.id,
        ..ExplainAnswer::default()
    };
    let target = match explain::Target::parse(&request.target_kind, &request.target) {
        Ok(t) => t,
        Err(e) => {
            answer.error = e;
            return answer;
        }
    };
    let last =
        (request.windows > 0).then(|| usize::try_from(request.windows).unwrap_or(usize::MAX));
    let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
    match explain::explain(&target, recent.make_contiguous(), last) {
        Ok(e) => match serde_json::to_string(&e) {
            Ok(json) => answer.explanation_json = json,
            Err(e) => answer.error = e.to_string(),
        },
        // Not this node's SLO: nothing to say, like a cgroup it lacks.
        Err(explain::ExplainError::NoSuchSlo { .. }) => {}
        Err(e) => answer.error = e.to_string(),
    }
    answer
}

/// Windows a firing SLO is explained over.
pub const ALERT_EXPLAIN_WINDOWS: usize = 10;

impl Agent {
    /// Starts the agent: the SLO state, the socket, the probes (resuming
    /// from the last agent's checkpoint with pins), the sinks; the first
    /// window opens now. The sinks' settings are the caller's to check
    /// first: a mistake there must leave nothing half-started.
    pub async fn start(
        config: AgentConfig,
        note: &mut dyn FnMut(Note<'_>),
    ) -> Result<Self, AgentError> {
        if !config.slos.is_empty() || config.pin.is_some() {
            std::fs::create_dir_all(&config.state_dir).map_err(|source| AgentError::StateDir {
                dir: config.state_dir.clone(),
                source,
            })?;
        }
        let slos = if config.slos.is_empty() {
            Slos::new(Vec::new(), None)?
        } else {
            Slos::new(config.slos, Some(config.state_dir.clone()))?
        };
        let thresholds = sonde_slo::spec::kernel_thresholds(slos.specs());
        let mut local = config
            .socket
            .as_deref()
            .map(LocalServer::bind)
            .transpose()?;
        let last_checkpoint = config
            .pin
            .as_ref()
            .map(|_| checkpoint::load(&config.state_dir));
        let manifest: Option<Manifest> = last_checkpoint
            .as_ref()
            .and_then(|c| c.as_ref().ok()?.as_ref())
            .map(|c| c.manifest.clone());
        let probes = Probes::load(ProbeOptions {
            latency_thresholds_ns: thresholds,
            pin: config.pin.clone().map(|dir| (dir, manifest)),
            ..config.probes
        })?;
        if !probes.any_attached() {
            return Err(AgentError::NoProbe {
                statuses: probes.statuses().to_vec(),
            });
        }
        for status in probes.statuses() {
            if status.state == ProbeState::Unavailable && status.reason.is_some() {
                note(Note::Unavailable(status));
            }
        }
        // A disk outbox a previous agent numbered: that agent stopped, and
        // what the kernel saw since is in no window unless pinned probes
        // counted it and the first window resumes from its checkpoint.
        let previous_run = config.sinks.outbox_dir.as_deref().and_then(|dir| {
            Outbox::persisted_next_sequence(dir)
                .or_else(|| Outbox::persisted_next_sequence(&crate::export::remote_write_dir(dir)))
        });
        let resume = last_checkpoint
            .and_then(|c| checkpoint::resume(&probes, c, previous_run))
            .or_else(|| previous_run.map(|_| checkpoint::unwatched()));
        if let Some(outcome) = probes.pin_outcome() {
            note(Note::Pins {
                outcome,
                resume: resume.as_ref(),
            });
        }
        let options = SamplerOptions {
            kubelet_pods_dir: config.kubelet_pods_dir,
            resume,
        };
        let sampler = Sampler::start_with(probes, options).map_err(AgentError::Read)?;
        let sample = match config.overhead_budget_percent {
            Some(_) => config.overhead_sample.min(config.interval / 2),
            None => Duration::ZERO,
        };
        let mut meter = Meter::new(sample);
        let governor = config
            .overhead_budget_percent
            .map(|p| (Governor::new(BudgetConfig::new(p)), p));
        meter.start_sample(sampler.probes());
        let sinks = Sinks::start(&config.sinks, sampler.window_start_unix_ns()).await?;
        let recent: Arc<Mutex<VecDeque<explain::Window>>> = Arc::default();
        let answering = recent.clone();
        sinks.answer_explain_requests(Arc::new(move |request| {
            explain_request(&answering, request)
        }));
        if let Some(server) = &mut local {
            server.start(config.interval)?;
            note(Note::Serving(server.path()));
        }
        if let Some(addr) = sinks.prometheus_addr {
            note(Note::Prometheus(addr));
        }
        note(Note::Ready(sampler.probes().statuses()));
        let mut ticks = tokio::time::interval(config.interval);
        ticks.tick().await; // the first tick is immediate
        let mut polls = tokio::time::interval(EVENT_POLL);
        polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Ok(Self {
            sampler,
            meter,
            governor,
            slos,
            sinks,
            local,
            state_dir: config.state_dir,
            checkpoint_failed: false,
            ticks,
            polls,
            sent_events: 0,
            recent,
        })
    }

    /// Waits for the window's end (sending events to socket clients and
    /// ending the budget's sample meanwhile), then closes it: overhead and
    /// budget, SLOs, sinks, socket, checkpoint. Cancelling it while it
    /// waits loses nothing (a signal to stop, say).
    pub async fn window(
        &mut self,
        note: &mut dyn FnMut(Note<'_>),
    ) -> Result<WindowOutcome, AgentError> {
        loop {
            let sample_end = self.meter.sample_deadline();
            tokio::select! {
                _ = self.ticks.tick() => break,
                _ = sleep_until(sample_end), if sample_end.is_some() => {
                    self.meter.end_sample(self.sampler.probes());
                }
                _ = self.polls.tick(), if self.local.is_some() => {
                    if let Some(server) = &self.local {
                        for event in self.sampler.poll_events() {
                            server.event(&event);
                            self.sent_events += 1;
                        }
                    }
                }
            }
        }
        let mut snapshot = self.sampler.tick().map_err(AgentError::Read)?;
        // A sample still running (a window shorter than it) ends here.
        self.meter.end_sample(self.sampler.probes());
        let counting: Vec<Family> = self
            .sampler
            .probes()
            .statuses()
            .iter()
            .filter(|s| s.state != ProbeState::Unavailable)
            .filter_map(ProbeStatus::family)
            .collect();
        let mut overhead = self.meter.window(&counting);
        if let Some((g, budget_percent)) = &mut self.governor {
            overhead.budget_percent = Some(*budget_percent);
            // Shed during this window: what its statuses say.
            overhead.shed = g.shed();
            match g.decide(&overhead, &counting) {
                Some(Action::Shed(family, why)) => {
                    note(Note::Shed { family, why: &why });
                    self.sampler.detach(family, &why);
                }
                Some(Action::Restore(family)) => {
                    let state = self.sampler.reattach(family).map(|s| s.state);
                    note(Note::Restored { family, state });
                }
                None => {}
            }
        }
        snapshot.overhead = Some(overhead);
        self.meter.start_sample(self.sampler.probes());
        if !self.slos.is_empty() {
            snapshot.slos = self.slos.window(&snapshot).map_err(AgentError::SloState)?;
        }
        if !self.slos.is_empty() || self.sinks.has_collector() {
            self.explain_alerts(&mut snapshot);
        }
        let own_losses: Vec<LossRecord> = self
            .local
            .iter()
            .map(|server| LossRecord {
                stage: "local_socket",
                probe: "all",
                reason: "client_too_slow",
                count: server.take_dropped(),
            })
            .collect();
        let sequence = self
            .sinks
            .window(&snapshot, &own_losses)
            .map_err(AgentError::Window)?;
        if let Some(server) = &self.local {
            // The window's events come first in the order they were read,
            // so the ones not sent yet are at the end.
            for event in snapshot.process.events.iter().skip(self.sent_events) {
                server.event(event);
            }
            server.window(sequence, &snapshot);
        }
        self.sent_events = 0;
        // Last: a crash before this leaves the checkpoint one window
        // behind, which a disk outbox's sequence shows (see `checkpoint`).
        let saved = checkpoint::save(
            &self.state_dir,
            self.sampler.probes(),
            sequence,
            snapshot.window_end_unix_ns,
            self.sampler.last_reading(),
        );
        match saved {
            Some(Err(error)) if !self.checkpoint_failed => {
                note(Note::CheckpointFailed {
                    dir: &self.state_dir,
                    error: &error,
                });
                self.checkpoint_failed = true;
            }
            Some(Ok(())) => self.checkpoint_failed = false,
            _ => {}
        }
        Ok(WindowOutcome { sequence, snapshot })
    }

    /// Keeps the window for `sonde explain`'s rules and attaches to every
    /// firing SLO its explanation over the recent windows, this one
    /// included. A window that cannot be read back (a bug: the types are
    /// this build's own) is left out with a warning in the log, and the
    /// alerts explain the others.
    fn explain_alerts(&mut self, snapshot: &mut Snapshot) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        match explain::Window::from_snapshot(snapshot) {
            Ok(w) => {
                if recent.len() == ALERT_EXPLAIN_WINDOWS {
                    recent.pop_front();
                }
                recent.push_back(w);
            }
            Err(e) => log::warn!("explain: a window did not read back: {e}"),
        }
        let recent = recent.make_contiguous();
        for status in &mut snapshot.slos {
            if status.evaluation.severity != sonde_slo::slo::Severity::Ok {
                status.explanation = explain::for_alert(&status.name, recent);
            }
        }
    }

    /// Stops: each queue gets its own `drain_timeout` to deliver what is
    /// left, the remote-write stores' first, then the collector's acks.
    pub async fn stop(self, drain_timeout: Duration) -> Stopped {
        let unwritten = self.sinks.drain_remote_write(drain_timeout).await;
        let kept = self.sinks.remote_write_kept();
        let unacked = self.sinks.drain(drain_timeout).await;
        Stopped {
            unwritten,
            kept,
            unacked,
        }
    }
}

/// Sleeps until `deadline` (never returns without one).
async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
