//! Pressure stall information (PSI): for the node (`/proc/pressure/*`) and
//! per cgroup (`<cgroup v2 dir>/{cpu,memory,io}.pressure`).

use std::path::Path;

pub use crate::model::host::{Pressure, Psi, PsiLine};

/// Parses a PSI file (`some avg10=0.00 avg60=0.00 avg300=0.00 total=0`, then
/// an optional `full ...` line).
pub fn parse(text: &str) -> Option<Psi> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let mut l = PsiLine {
            avg10: 0.0,
            avg60: 0.0,
            avg300: 0.0,
            total_us: 0,
        };
        // Each of the four keys exactly once.
        let mut seen = 0u8;
        for word in words {
            let (key, value) = word.split_once('=')?;
            let bit = match key {
                "avg10" => {
                    l.avg10 = average(value)?;
                    1
                }
                "avg60" => {
                    l.avg60 = average(value)?;
                    2
                }
                "avg300" => {
                    l.avg300 = average(value)?;
                    4
                }
                "total" => {
                    l.total_us = value.parse().ok()?;
                    8
                }
                _ => continue,
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
        }
        if seen != 0b1111 {
            return None;
        }
        *slot = Some(l);
    }
    Some(Psi { some: some?, full })
}

/// A PSI average: a percentage.
fn average(value: &str) -> Option<f64> {
    value
        .parse()
        .ok()
        .filter(|v: &f64| (0.0..=100.0).contains(v))
}

fn read_dir(dir: &Path, suffix: &str) -> Pressure {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(format!("{name}{suffix}")))
            .ok()
            .and_then(|t| parse(&t))
    };
    Pressure {
        cpu: read("cpu"),
        memory: read("memory"),
        io: read("io"),
    }
}

/// The node's PSI from `<proc>/pressure/`.
pub fn node(proc_root: &Path) -> Pressure {
    read_dir(&proc_root.join("pressure"), "")
}

/// A cgroup's PSI from its v2 directory.
pub fn cgroup(dir: &Path) -> Pressure {
    read_dir(dir, ".pressure")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full() {
        let psi = parse(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=42\n",
        )
        .unwrap();
        assert_eq!(psi.some.total_us, 123456);
        assert_eq!(psi.some.avg10, 1.5);
        assert_eq!(psi.full.unwrap().total_us, 42);
        let cpu_old = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n").unwrap();
        assert!(cpu_old.full.is_none());
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse("").is_none());
        assert!(parse("some avg10=x avg60=0 avg300=0 total=1").is_none());
        assert!(parse("some avg10=0.00 total=1").is_none());
        // Found by the fuzzer: a key twice stood in for a missing one, and
        // an average far above 100 % was taken.
        assert!(parse("some avg10=0.00 avg60=0.43 avg300=2.39 total=155442534\nfull avg10=0.00 avg60=0.00 avg60=0.43 avg300=106891196\n").is_none());
        assert!(parse("some avg10=0.00 avg60=0.00 avg300=100.01 total=1").is_none());
        assert!(parse("some avg10=NaN avg60=0.00 avg300=0.00 total=1").is_none());
        assert!(
            parse("full avg10=0 avg60=0 avg300=0 total=1").is_none(),
            "some is required"
        );
    }

    #[test]
    fn reads_fixture_directories() {
        let dir = std::env::temp_dir().join(format!("sonde-psi-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pressure")).unwrap();
        std::fs::write(
            dir.join("pressure/cpu"),
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n",
        )
        .unwrap();
        std::fs::write(dir.join("io.pressure"), "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=4\n").unwrap();
        assert_eq!(node(&dir).cpu.unwrap().some.total_us, 9);
        assert!(node(&dir).memory.is_none());
        assert_eq!(cgroup(&dir).io.unwrap().full.unwrap().total_us, 4);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
