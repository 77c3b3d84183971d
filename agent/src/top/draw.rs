//! Drawing the board with ratatui: thin, everything it shows comes from
//! [`Board`]. [`text`] draws the same frame into a buffer and returns it as
//! plain text (`sonde top --once`, and the tests).

use ratatui::{
    backend::TestBackend,
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row as TableRow, Table},
    Frame, Terminal,
};

use super::{rate, secs, sparkline, Board, Column, Node, HISTORY};

/// What the frame says about where the windows come from.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// e.g. `probes of this process` or `agent at /run/sonde/agent.sock`.
    pub source: String,
    /// A passing message (waiting for the first window, the agent left).
    pub note: Option<String>,
    /// The selected row's explanation (key `e`), shown above the table.
    pub explanation: Vec<String>,
}

/// The keys, as the footer shows them.
pub const KEYS: &str =
    "←/→ sort column  r reverse  ↑/↓ PgUp/PgDn select  e explain the selected row  q quit";

fn opt_secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), secs)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}%"))
}

/// The node's golden signals, two lines.
fn node_lines(n: &Node) -> [String; 2] {
    let per_sec = |x: u64| {
        if n.window_secs > 0.0 {
            x as f64 / n.window_secs
        } else {
            0.0
        }
    };
    let ratio = if n.calls > 0 {
        format!("{:.2}%", 100.0 * n.errors as f64 / n.calls as f64)
    } else {
        "-".to_owned()
    };
    [
        format!(
            "syscalls {}/s  errors {}/s ({ratio})  p50 {}  p99 {}   run queue p50 {}  p99 {}   pressure cpu {}  mem {}  io {}{}",
            rate(per_sec(n.calls)),
            rate(per_sec(n.errors)),
            opt_secs(n.sys_p50),
            opt_secs(n.sys_p99),
            opt_secs(n.runq_p50),
            opt_secs(n.runq_p99),
            pct(n.psi_cpu),
            pct(n.psi_memory),
            pct(n.psi_io),
            n.families
                .iter()
                .map(|f| format!("   {f}"))
                .collect::<String>(),
        ),
        format!(
            "tcp connects {} (p99 {})  failed {}  retrans {}  resets {}   crashes+oom {}   block {} requests, {} errors, p99 {}",
            n.tcp_connects,
            opt_secs(n.tcp_connect_p99),
            n.tcp_failures,
            n.retransmits,
            n.resets,
            n.crashes,
            n.block_completed,
            n.block_errors,
            opt_secs(n.block_p99),
        ),
    ]
}

fn title_line(board: &Board, status: &Status) -> String {
    let n = board.node();
    let mut line = format!("sonde top — {}", status.source);
    if n.windows > 0 {
        line.push_str(&format!(
            "   window {:.2}s, {} seen   {}",
            n.window_secs,
            n.windows,
            if n.complete {
                "complete".to_owned()
            } else {
                format!("INCOMPLETE (lost {})", n.lost)
            }
        ));
        if !n.probes_down.is_empty() {
            line.push_str(&format!("   probes: {}", n.probes_down.join(", ")));
        }
    }
    if let Some(note) = &status.note {
        line.push_str(&format!("   {note}"));
    }
    line
}

/// The lines above the table after the node's: the SLOs, then the
/// selected row's explanation.
fn head_lines(board: &Board, status: &Status) -> Vec<String> {
    let mut lines = slo_lines(board);
    lines.extend(status.explanation.iter().cloned());
    lines
}

/// SLOs shown above the table, at most.
const MAX_SLO_LINES: usize = 4;

/// The SLO lines, worst first, the rest counted.
fn slo_lines(board: &Board) -> Vec<String> {
    let slos = board.slos();
    let mut out: Vec<String> = slos.iter().take(MAX_SLO_LINES).map(|s| s.text()).collect();
    if slos.len() > MAX_SLO_LINES {
        if let Some(last) = out.last_mut() {
            last.push_str(&format!(
                "   (+{} more: sonde slo)",
                slos.len() - MAX_SLO_LINES
            ));
        }
    }
    out
}

/// Width of the name column: the longest name, within bounds.
fn name_width(names: impl Iterator<Item = usize>) -> u16 {
    names.max().unwrap_or(0).clamp(16, 64) as u16
}

/// Width of a value column.
fn column_width(c: Column) -> u16 {
    match c {
        // A name and its wait per second.
        Column::Neighbour => 24,
        _ => c.title().len().max(7) as u16,
    }
}

/// The neighbour's name, cut on the left to leave room for its figure.
fn neighbour_cell(name: &str, figure: &str, width: u16) -> String {
    let room = usize::from(width).saturating_sub(figure.chars().count() + 1);
    let n = name.chars().count();
    let name = if n <= room {
        name.to_owned()
    } else {
        let keep: String = name.chars().skip(n + 1 - room.max(1)).collect();
        format!("…{keep}")
    };
    format!("{name} {figure}")
}

/// What fits in `width` columns: the indices (into [`Column::ALL`]) of the
/// value columns shown and the width of the history. On a narrow terminal
/// the history shrinks and then goes, then columns go from the right; the
/// sort column always stays.
fn fit(width: u16, name_w: u16, sort: Column) -> (Vec<Column>, u16) {
    const SPACING: u16 = 1;
    let mut shown: Vec<Column> = Column::ALL.to_vec();
    let used = |shown: &[Column]| {
        name_w
            + shown
                .iter()
                .map(|&c| column_width(c) + SPACING)
                .sum::<u16>()
    };
    while used(&shown) > width {
        let Some(at) = shown.iter().rposition(|&c| c != sort) else {
            break;
        };
        if shown.len() == 1 {
            break;
        }
        shown.remove(at);
    }
    let left = width.saturating_sub(used(&shown) + SPACING);
    // A history shorter than 8 windows says little: leave it out then.
    let history_w = if left >= 8 {
        left.min(HISTORY as u16)
    } else {
        0
    };
    (shown, history_w)
}

/// Draws the whole frame; `scroll` rows of the table are skipped.
pub fn draw(frame: &mut Frame<'_>, board: &Board, status: &Status, scroll: usize) {
    let slo_lines = head_lines(board, status);
    let [head, table_area, foot] = Layout::vertical([
        Constraint::Length(3 + slo_lines.len() as u16),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let [a, b] = node_lines(board.node());
    let mut lines = vec![
        Line::from(title_line(board, status)).style(Style::new().add_modifier(Modifier::BOLD)),
        Line::from(a),
        Line::from(b),
    ];
    lines.extend(slo_lines.into_iter().map(Line::from));
    frame.render_widget(Paragraph::new(lines), head);

    let rows = board.rows();
    let header_style = |c: Column| {
        if c == board.sort {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }
    };
    let name_w = name_width(rows.iter().map(|r| r.name.chars().count()));
    let (shown, history_w) = fit(table_area.width, name_w, board.sort);
    let mut header: Vec<Cell> =
        vec![Cell::from("NAME").style(Style::new().add_modifier(Modifier::BOLD))];
    header.extend(shown.iter().map(|&c| {
        Cell::from(Line::from(c.title()).alignment(Alignment::Right)).style(header_style(c))
    }));
    let mut widths = vec![Constraint::Length(name_w)];
    widths.extend(shown.iter().map(|&c| Constraint::Length(column_width(c))));
    if history_w > 0 {
        header.push(Cell::from("HISTORY").style(Style::new().add_modifier(Modifier::BOLD)));
        widths.push(Constraint::Length(history_w));
    }
    let body: Vec<TableRow> = rows
        .iter()
        .skip(scroll)
        .enumerate()
        .map(|(i, r)| {
            let mut cells = vec![Cell::from(r.name.clone())];
            cells.extend(shown.iter().map(|&c| {
                let text = match (c, &r.neighbour) {
                    (Column::Neighbour, Some(name)) => {
                        neighbour_cell(name, &c.format(r.value(c)), column_width(c))
                    }
                    _ => c.format(r.value(c)),
                };
                Cell::from(Line::from(text).alignment(Alignment::Right))
            }));
            if history_w > 0 {
                cells.push(Cell::from(sparkline(&r.history, usize::from(history_w))));
            }
            // The first row shown is the selected one (key `e` explains it).
            if i == 0 {
                TableRow::new(cells).style(Style::new().add_modifier(Modifier::UNDERLINED))
            } else {
                TableRow::new(cells)
            }
        })
        .collect();
    frame.render_widget(
        Table::new(body, widths)
            .header(TableRow::new(header))
            .column_spacing(1),
        table_area,
    );

    let order = if board.descending { "↓" } else { "↑" };
    frame.render_widget(
        Paragraph::new(Line::from(format!(
            "{KEYS}   sorted by {} {order} ({}); HISTORY: that column, one bar per window",
            board.sort.title(),
            board.sort.describe()
        ))),
        foot,
    );
}

/// The rows the table has room for in `area` (for paging).
pub fn table_rows(board: &Board, status: &Status, area: Rect) -> usize {
    // Three lines of head and the SLOs', one header row, one line of keys.
    usize::from(
        area.height
            .saturating_sub(5 + head_lines(board, status).len() as u16),
    )
}

/// The frame as plain text, `width` columns wide and as tall as the board
/// needs; trailing blanks trimmed.
pub fn text(board: &Board, status: &Status, width: u16) -> String {
    let height = (board.rows().len() + 5 + head_lines(board, status).len())
        .min(usize::from(u16::MAX)) as u16;
    let mut terminal = match Terminal::new(TestBackend::new(width, height)) {
        Ok(t) => t,
        Err(e) => return format!("sonde top: cannot draw: {e}\n"),
    };
    if let Err(e) = terminal.draw(|f| draw(f, board, status, 0)) {
        return format!("sonde top: cannot draw: {e}\n");
    }
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buffer.area.height {
        let mut line = String::new();
        for x in 0..buffer.area.width {
            if let Some(cell) = buffer.cell((x, y)) {
                line.push_str(cell.symbol());
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::{CgroupRef, Owner},
        model::{CgroupSyscalls, Snapshot, SyscallSeries},
        top::Window,
    };

    #[test]
    fn a_frame_as_text_has_the_numbers() {
        let mut errnos = std::collections::BTreeMap::new();
        errnos.insert("ENOENT".to_owned(), 250);
        let mut h = sonde_slo::Histogram::new();
        for _ in 0..1000 {
            h.record_binary_ns(3_000);
        }
        let series = SyscallSeries::new("openat".to_owned(), 257, h, errnos, 1.0);
        let s = Snapshot {
            window_secs: 1.0,
            complete: true,
            syscalls: crate::model::syscalls::Part {
                cgroups: vec![CgroupSyscalls {
                    cgroup: CgroupRef {
                        cgroup_id: 5,
                        cgroup_path: Some("/batch".to_owned()),
                        owner: Owner::Other,
                    },
                    calls: series.calls,
                    errors: series.errors,
                    syscalls: vec![series],
                }],
            },
            // Its tasks waited 0.4 s of the second behind /hog's.
            sched: crate::model::sched::Part {
                runqueue_holders: vec![crate::model::sched::CgroupHolders {
                    cgroup: CgroupRef {
                        cgroup_id: 5,
                        cgroup_path: Some("/batch".to_owned()),
                        owner: Owner::Other,
                    },
                    wait_secs: 0.5,
                    waits: 10,
                    idle_wait_secs: 0.1,
                    earlier_wait_secs: 0.0,
                    holders: vec![crate::model::sched::Holder {
                        cgroup: CgroupRef {
                            cgroup_id: 6,
                            cgroup_path: Some("/hog".to_owned()),
                            owner: Owner::Other,
                        },
                        wait_secs: 0.4,
                        waits: 9,
                    }],
                    rest: Default::default(),
                }],
                ..Default::default()
            },
            ..Snapshot::default()
        };
        let mut board = Board::new();
        board.add(&Window::from_snapshot(&s).unwrap());
        let status = Status {
            source: "a test".to_owned(),
            note: None,
            explanation: vec!["explain /batch: verdict: cpu_contention".to_owned()],
        };
        let text = text(&board, &status, 260);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("sonde top — a test"), "{text}");
        assert!(lines[0].contains("complete"), "{text}");
        assert!(lines[1].contains("syscalls 1000/s"), "{text}");
        // The selected row's explanation sits above the table.
        assert_eq!(
            lines[3], "explain /batch: verdict: cpu_contention",
            "{text}"
        );
        let header: Vec<&str> = lines[4].split_whitespace().collect();
        let row: Vec<&str> = lines[5].split_whitespace().collect();
        // The neighbour is named with the wait it caused per second.
        assert!(lines[5].contains("/hog 0.40"), "{text}");
        assert_eq!(header[0], "NAME");
        assert_eq!(row[0], "/batch");
        let at = |title: &str| header.iter().position(|h| *h == title).unwrap();
        assert_eq!(row[at("ERRS")], "250");
        assert_eq!(row[at("ERR%")], "25.0%");
        assert_eq!(row[at("ERR/s")], "250");
        // (The neighbour's cell is two words: columns after it shift by one.)
        assert_eq!(row[at("SLO_BURN") + 1], "-", "{text}");
        assert!(text.contains("q quit"), "{text}");
    }

    #[test]
    fn narrow_terminals_lose_history_then_columns_never_the_sort() {
        let all: Vec<Column> = Column::ALL.to_vec();
        let (shown, history) = fit(400, 20, Column::ErrorsPerSec);
        assert_eq!((shown, history), (all.clone(), HISTORY as u16));
        let full: u16 = 20
            + Column::ALL
                .iter()
                .map(|c| column_width(*c) + 1)
                .sum::<u16>();
        let (shown, history) = fit(full + 12, 20, Column::ErrorsPerSec);
        assert_eq!((shown, history), (all, 11));
        let (shown, history) = fit(60, 20, Column::Crashes);
        assert_eq!(history, 0);
        assert!(
            shown.contains(&Column::Crashes),
            "the sort column stays: {shown:?}"
        );
        assert_eq!(
            shown[0],
            Column::ALL[0],
            "the first columns stay: {shown:?}"
        );
        let used: u16 = 20 + shown.iter().map(|&c| column_width(c) + 1).sum::<u16>();
        assert!(used <= 60, "{used}");
    }
}
