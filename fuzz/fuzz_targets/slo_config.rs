//! The files an operator (or whoever can write them) hands sonde: the
//! first byte says which, the rest is the text. `sonde.toml` and OpenSLO
//! YAML go through `sonde_slo::spec::parse` and then where the agent and
//! the collector use the specs (kernel thresholds, Prometheus rules, fleet
//! trackers); the agent's `slo-state.json` through `StateFile::parse` and
//! the trackers' resume, then one more window.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sonde::slo::StateFile;
use sonde_slo::{
    rules::{self, MetricNames},
    slo::{Tracker, WindowCounts},
    spec::{self, SloSpec},
};

/// The specs a state file is resumed against.
const SLOS: &str = include_str!("../fixtures/sonde.toml");

fn window(tracker: &mut Tracker) {
    let end_unix_secs = tracker.latest_unix_secs().saturating_add(10);
    let evaluation = tracker.push(WindowCounts {
        end_unix_secs,
        good: 9,
        total: 10,
        complete: true,
    });
    let _ = evaluation.burn_by_window();
}

fn use_specs(specs: Vec<SloSpec>) {
    let _ = spec::kernel_thresholds(&specs);
    let names = MetricNames {
        good: "sonde_slo_sli_good_total".into(),
        total: "sonde_slo_sli_total_total".into(),
        name_label: "slo_name".into(),
    };
    let _ = rules::prometheus(&specs, &names);
    for s in &specs {
        window(&mut Tracker::new(s.objective.clone()));
    }
    let _ = sonde_collector::slo::FleetSlos::new(specs).list();
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(specs) = spec::parse("sonde.toml", text) {
                use_specs(specs);
            }
        }
        1 => {
            if let Ok(specs) = spec::parse("slo.yaml", text) {
                use_specs(specs);
            }
        }
        _ => {
            let Ok(mut state) = StateFile::parse(Path::new("slo-state.json"), text) else {
                return;
            };
            let specs = spec::parse("sonde.toml", SLOS).expect("the seed SLOs parse");
            for s in specs {
                let mut tracker = match state.slos.remove(&s.name) {
                    Some(saved) => Tracker::resume(s.objective.clone(), saved),
                    None => Tracker::new(s.objective.clone()),
                };
                window(&mut tracker);
            }
        }
    }
});
