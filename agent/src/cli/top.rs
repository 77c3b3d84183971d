//! `sonde top`: a live terminal view of the node's golden signals and of each
//! cgroup, worst first. Windows come from this process's own probes, or with
//! `--attach` from a running agent's local socket (no probes loaded, no
//! privilege needed beyond access to the socket). `--once` prints one frame
//! as text and exits.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use ratatui::{
    crossterm::{
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
    prelude::CrosstermBackend,
    Terminal,
};
use tokio::signal::unix::{signal, SignalKind};

use super::{parse_duration, ProbeArgs};
use crate::{
    explain,
    local::{client::LocalClient, Frame, DEFAULT_SOCKET},
    sampler::Sampler,
    top::{
        draw::{self, Status},
        Board, Window,
    },
};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Read a running agent's windows from its local socket instead of
    /// loading probes (the agent runs with `--socket`).
    #[arg(long)]
    attach: bool,
    /// The agent's socket, with --attach.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, requires = "attach")]
    socket: PathBuf,
    /// Length of a window when running on its own probes.
    #[arg(long, default_value = "1s", value_parser = parse_duration, conflicts_with = "attach")]
    interval: Duration,
    /// Print one frame as text after the next window and exit (no terminal
    /// needed). With --attach, the frame holds the agent's recent windows.
    #[arg(long)]
    once: bool,
    /// Width of the --once frame, in columns.
    #[arg(long, default_value_t = 220, requires = "once",
          value_parser = clap::value_parser!(u16).range(40..))]
    width: u16,
    #[command(flatten)]
    probes: ProbeArgs,
}

/// Where windows come from.
enum Source {
    Probes {
        sampler: Box<Sampler>,
        ticks: tokio::time::Interval,
    },
    Agent {
        client: LocalClient,
        /// Past windows still to come before the live ones.
        backlog: usize,
    },
}

/// A window as top shows it and as `sonde explain` reads it.
struct Windows {
    top: Window,
    explain: explain::Window,
}

impl Windows {
    fn from_json(value: serde_json::Value) -> anyhow::Result<Self> {
        Ok(Self {
            top: Window::from_json(value.clone()).context("reading a window")?,
            explain: explain::Window::from_json(value).context("reading a window")?,
        })
    }
}

/// Windows key `e` explains the selected row over, at most.
const EXPLAIN_WINDOWS: usize = 10;

impl Source {
    /// The next window, and whether it is a past one (the agent's backlog);
    /// `None` when the agent stopped.
    async fn next(&mut self) -> anyhow::Result<Option<(Windows, bool)>> {
        match self {
            Source::Probes { sampler, ticks } => {
                ticks.tick().await;
                let snapshot = sampler.tick().context("reading the probes' maps")?;
                Ok(Some((
                    Windows::from_json(serde_json::to_value(&snapshot)?)?,
                    false,
                )))
            }
            Source::Agent { client, backlog } => loop {
                match client.next().await? {
                    None => return Ok(None),
                    Some(Frame::Window { window, .. }) => {
                        let past = *backlog > 0;
                        *backlog = backlog.saturating_sub(1);
                        let window = Windows::from_json(window)
                            .context("reading a window from the agent")?;
                        return Ok(Some((window, past)));
                    }
                    Some(_) => continue,
                }
            },
        }
    }
}

/// The selected row's explanation over `recent`, as a few lines (the
/// verdict and the top findings).
fn explain_row(board: &Board, scroll: usize, recent: &[explain::Window]) -> Vec<String> {
    let rows = board.rows();
    let Some(row) = rows.get(scroll) else {
        return vec!["explain: no row selected".to_owned()];
    };
    let Some(path) = &row.cgroup_path else {
        return vec![format!(
            "explain {}: its cgroup has no path (it is gone)",
            row.name
        )];
    };
    match explain::explain(&explain::Target::Cgroup(path.clone()), recent, None) {
        Ok(e) => {
            let text = explain::render(&e);
            let mut lines = text.lines();
            let verdict = lines.next().unwrap_or_default();
            // The verdict, then up to three findings (the target line left out).
            std::iter::once(format!("explain {}: {verdict}", row.name))
                .chain(lines.skip(1).take(3).map(|l| format!("  {l}")))
                .collect()
        }
        Err(err) => vec![format!("explain {}: {err}", row.name)],
    }
}

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.once && !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "sonde top draws on a terminal and stdout is not one; pass --once to print one frame as text"
        );
    }
    let (mut source, status) = if args.attach {
        let client = LocalClient::connect(&args.socket).await?;
        let status = Status {
            source: format!(
                "agent at {} (sonde {}, {}s windows)",
                args.socket.display(),
                client.hello.version,
                client.hello.interval_secs
            ),
            note: None,
            explanation: Vec::new(),
        };
        let backlog = client.hello.backlog;
        (Source::Agent { client, backlog }, status)
    } else {
        // Loading a second copy of the probes works, but costs the node
        // twice: say so when an agent already serves the same windows.
        if std::os::unix::net::UnixStream::connect(DEFAULT_SOCKET).is_ok() {
            eprintln!(
                "sonde: an agent serves {DEFAULT_SOCKET}: `sonde top --attach` reads it without loading the probes again"
            );
        }
        let sampler = args.probes.start()?;
        let mut ticks = tokio::time::interval(args.interval);
        ticks.tick().await; // the first tick is immediate
        let status = Status {
            source: format!(
                "own probes, {} windows",
                humantime::format_duration(args.interval)
            ),
            note: None,
            explanation: Vec::new(),
        };
        (
            Source::Probes {
                sampler: Box::new(sampler),
                ticks,
            },
            status,
        )
    };
    let mut board = Board::new();
    if args.once {
        loop {
            match source.next().await? {
                Some((window, past)) => {
                    board.add(&window.top);
                    if !past {
                        break;
                    }
                }
                None => anyhow::bail!("the agent closed the connection before its next window"),
            }
        }
        print!("{}", draw::text(&board, &status, args.width));
        return Ok(ExitCode::SUCCESS);
    }
    interactive(source, board, status).await
}

/// Puts the terminal back however `sonde top` ends: quit, error or panic.
struct Restore;

impl Restore {
    fn enter() -> anyhow::Result<Self> {
        terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
        let guard = Self;
        execute!(std::io::stdout(), EnterAlternateScreen)
            .context("switching to the alternate screen")?;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            Self::leave();
            previous(info);
        }));
        Ok(guard)
    }

    fn leave() {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(
            std::io::stdout(),
            LeaveAlternateScreen,
            ratatui::crossterm::cursor::Show
        );
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        Self::leave();
    }
}

/// What a key asks for.
enum Action {
    Quit,
    Redraw,
    Explain,
    None,
}

fn key(board: &mut Board, scroll: &mut usize, page: usize, ev: Event) -> Action {
    let Event::Key(k) = ev else {
        return if matches!(ev, Event::Resize(..)) {
            Action::Redraw
        } else {
            Action::None
        };
    };
    if k.kind == KeyEventKind::Release {
        return Action::None;
    }
    match k.code {
        KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Action::Quit,
        KeyCode::Right | KeyCode::Char('>') | KeyCode::Tab => board.shift_sort(1),
        KeyCode::Left | KeyCode::Char('<') | KeyCode::BackTab => board.shift_sort(-1),
        KeyCode::Char('r') => board.descending = !board.descending,
        KeyCode::Down | KeyCode::Char('j') => *scroll += 1,
        KeyCode::Up | KeyCode::Char('k') => *scroll = scroll.saturating_sub(1),
        KeyCode::PageDown => *scroll += page.max(1),
        KeyCode::PageUp => *scroll = scroll.saturating_sub(page.max(1)),
        KeyCode::Home => *scroll = 0,
        KeyCode::Char('e') => return Action::Explain,
        _ => return Action::None,
    }
    Action::Redraw
}

async fn interactive(
    mut source: Source,
    mut board: Board,
    mut status: Status,
) -> anyhow::Result<ExitCode> {
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    // crossterm's reads block: a thread of their own feeds the loop.
    let (tx, mut keys) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    let _restore = Restore::enter()?;
    let mut terminal =
        Terminal::new(CrosstermBackend::new(std::io::stdout())).context("opening the terminal")?;
    terminal.clear().context("clearing the terminal")?;
    status.note = Some("waiting for the first window".to_owned());
    let mut scroll = 0usize;
    let mut agent_gone = false;
    let mut recent: std::collections::VecDeque<explain::Window> = std::collections::VecDeque::new();
    // The cgroup whose explanation is shown, kept fresh each window.
    let mut explained: Option<usize> = None;
    loop {
        let page = terminal
            .size()
            .map(|s| {
                let area = ratatui::layout::Rect::new(0, 0, s.width, s.height);
                draw::table_rows(&board, &status, area)
            })
            .unwrap_or(0);
        scroll = scroll.min(board.rows().len().saturating_sub(1));
        terminal
            .draw(|f| draw::draw(f, &board, &status, scroll))
            .context("drawing")?;
        tokio::select! {
            ev = keys.recv() => {
                let Some(ev) = ev else { break };
                match key(&mut board, &mut scroll, page, ev) {
                    Action::Quit => break,
                    Action::Explain if explained.is_some() => {
                        explained = None;
                        status.explanation.clear();
                    }
                    Action::Explain => {
                        explained = Some(scroll);
                        status.explanation = explain_row(&board, scroll, recent.make_contiguous());
                    }
                    Action::Redraw | Action::None => {}
                }
            }
            next = source.next(), if !agent_gone => match next? {
                Some((window, _)) => {
                    board.add(&window.top);
                    if recent.len() == EXPLAIN_WINDOWS {
                        recent.pop_front();
                    }
                    recent.push_back(window.explain);
                    if let Some(at) = explained {
                        status.explanation = explain_row(&board, at, recent.make_contiguous());
                    }
                    status.note = None;
                }
                None => {
                    agent_gone = true;
                    status.note = Some("the agent stopped: no new windows (q quits)".to_owned());
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}
