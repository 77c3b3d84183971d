//! `sonde slo`: where this node's SLOs stand (from the running agent's
//! state file); `sonde slo check` validates a config; `sonde slo rules`
//! emits the equivalent Prometheus recording and alerting rules.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use sonde_slo::{slo::Severity, spec::SloSpec};

use crate::{
    model::slo::{window_label, SloStatus},
    slo::{StateFile, DEFAULT_STATE_DIR, STATE_FILE},
};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(subcommand)]
    command: Option<SloCommand>,
    /// The agent's state directory (its `--state-dir`).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Print the statuses as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum SloCommand {
    /// Check a config file (sonde.toml or OpenSLO YAML) and list its SLOs.
    Check {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print Prometheus recording and alerting rules equivalent to the SLOs
    /// (for `rule_files`; check them with `promtool check rules`).
    Rules {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// `prometheus`: a rules file (`rule_files`); `prometheus-operator`:
        /// a `PrometheusRule` object for the operator.
        #[arg(long, value_enum, default_value = "prometheus")]
        format: RulesFormat,
        /// The `PrometheusRule` object's name (with `--format prometheus-operator`).
        #[arg(long, default_value = "sonde-slo")]
        name: String,
    },
}

/// How `sonde slo rules` writes the rules.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RulesFormat {
    /// A Prometheus rules file.
    Prometheus,
    /// A prometheus-operator `PrometheusRule` object.
    PrometheusOperator,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(SloCommand::Check { config }) => {
            let specs = read_config(&config)?;
            for s in &specs {
                println!(
                    "{:<24} {:<20} {}% over {} days{}",
                    s.name,
                    s.signal,
                    s.objective.target * 100.0,
                    s.objective.window_secs as f64 / 86_400.0,
                    s.threshold_ns
                        .map(|ns| format!(", good at or below {} ms", ns as f64 / 1e6))
                        .unwrap_or_default()
                );
            }
            eprintln!(
                "sonde: {}: {} SLOs, all valid",
                config.display(),
                specs.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(SloCommand::Rules {
            config,
            format,
            name,
        }) => {
            let specs = read_config(&config)?;
            let names = metric_names();
            let text = match format {
                RulesFormat::Prometheus => sonde_slo::rules::prometheus(&specs, &names),
                RulesFormat::PrometheusOperator => {
                    sonde_slo::rules::prometheus_operator(&specs, &names, &name)
                }
            };
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let state = StateFile::read(&args.state_dir)?.with_context(|| {
                format!(
                    "no SLO state in {} ({STATE_FILE} missing): is an agent with --config running, \
                     and is this its --state-dir?",
                    args.state_dir.display()
                )
            })?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&state.latest)?);
            } else {
                print!("{}", table(&state.latest));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads and checks a config file; a bad one is one line naming the file,
/// the line and the fix.
pub(super) fn read_config(path: &Path) -> anyhow::Result<Vec<SloSpec>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the config {}: {e}; pass a readable sonde.toml or OpenSLO YAML file to --config",
            path.display()
        )
    })?;
    Ok(sonde_slo::spec::parse(&path.display().to_string(), &text)?)
}

/// The Prometheus names of the SLO counters, from the one translation.
fn metric_names() -> sonde_slo::rules::MetricNames {
    use sonde_proto::{names, prometheus, v1::MetricKind};
    sonde_slo::rules::MetricNames {
        good: prometheus::metric_name(names::SLO_GOOD, names::UNIT_EVENTS, MetricKind::Counter),
        total: prometheus::metric_name(names::SLO_TOTAL, names::UNIT_EVENTS, MetricKind::Counter),
        name_label: prometheus::label_name(names::ATTR_SLO_NAME),
    }
}

/// The severity as the table shows it: alerts in capitals.
fn severity(s: Severity) -> String {
    match s {
        Severity::Ok => s.name().to_owned(),
        _ => s.name().to_uppercase(),
    }
}

/// The SLO table: one row per SLO.
pub fn table(statuses: &[SloStatus]) -> String {
    let mut out = String::new();
    if statuses.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24} {:<20} {:>8} {:>5} {:>9} {:>12} {:>8}  {:<34} {:<7} DATA",
        "SLO", "SIGNAL", "TARGET", "DAYS", "SLI", "GOOD/TOTAL", "BUDGET", "BURN", "ALERT"
    );
    for s in statuses {
        let e = &s.evaluation;
        let sli = if e.compliance.total == 0 {
            "-".to_owned()
        } else {
            format!(
                "{:.3}%",
                100.0 * e.compliance.good as f64 / e.compliance.total as f64
            )
        };
        let burn = s
            .burn_by_window()
            .iter()
            .map(|(secs, b)| format!("{}:{b:.2}", window_label(*secs)))
            .collect::<Vec<_>>()
            .join(" ");
        let data = if !s.complete {
            format!("incomplete: {}", s.incomplete_because.join("; "))
        } else if !e.complete {
            "incomplete earlier in the alert windows".to_owned()
        } else {
            "complete".to_owned()
        };
        let _ = writeln!(
            out,
            "{:<24} {:<20} {:>7}% {:>5} {:>9} {:>12} {:>7.1}%  {:<34} {:<7} {data}",
            s.name,
            s.signal,
            s.objective_percent,
            s.window_days,
            sli,
            format!("{}/{}", e.compliance.good, e.compliance.total),
            e.budget_remaining * 100.0,
            burn,
            severity(e.severity),
        );
    }
    out
}
