//! The shipped units (the daemon, the one-shot service and its timer): `systemd-analyze verify`
//! is clean, the services' security exposure is at most 1.5, and none carries a secret. Needs
//! systemd-analyze (`apt-get install -y systemd`; `.ci/run` installs it): when it is missing
//! these tests fail with that message; they never pass unrun. (`.ci/package` runs the same
//! checks on the units as the Debian package installs them.)

use std::path::{Path, PathBuf};
use std::process::Command;

const SERVICES: &[&str] = &[
    "synqall-reconciler.service",
    "synqall-reconciler-once.service",
];
const TIMER: &str = "synqall-reconciler.timer";

fn unit(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name)
}

fn systemd_analyze() -> Command {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("systemd-analyze").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "systemd-analyze not found: install it with `apt-get install -y systemd` (.ci/run does)"
    );
    Command::new("systemd-analyze")
}

#[test]
fn units_verify_cleanly() {
    // verify checks that ExecStart exists: point it at the binary under test; the timer needs
    // its service beside it.
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for name in SERVICES.iter().chain([&TIMER]) {
        let text = std::fs::read_to_string(unit(name)).unwrap().replace(
            "/usr/bin/synqall-reconciler",
            env!("CARGO_BIN_EXE_synqall-reconciler"),
        );
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = systemd_analyze()
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    assert!(
        !stderr.contains("synqall-reconciler"),
        "systemd-analyze verify complained: {stderr}"
    );
}

#[test]
fn service_exposure_is_at_most_1_5() {
    for name in SERVICES {
        let out = systemd_analyze()
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(unit(name))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| {
                panic!(
                    "no exposure line in:\n{stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let score: f64 = line
            .split(':')
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
        assert!(score <= 1.5, "{name}: exposure {score} > 1.5:\n{stdout}");
    }
}

#[test]
fn units_hold_no_secret_and_read_the_url_as_a_credential() {
    for name in SERVICES {
        let unit = std::fs::read_to_string(unit(name)).unwrap();
        assert!(!unit.contains("postgres://") && !unit.contains("postgresql://"));
        assert!(!unit.to_lowercase().contains("password"));
        assert!(!unit.contains("Environment=DATABASE_URL"));
        assert!(unit.contains("LoadCredential=database-url:/etc/synqall-reconciler/database-url"));
        assert!(unit.contains("DynamicUser=yes"));
        assert!(
            unit.contains("ExecStart=/usr/bin/synqall-reconciler "),
            "{name}"
        );
    }
    let daemon = std::fs::read_to_string(unit(SERVICES[0])).unwrap();
    assert!(daemon.contains("Type=notify"));
    assert!(daemon.contains("RestartPreventExitStatus=64 78"));
    // The one-shot: drift left (2) and lock held (75) are not a failed unit.
    let once = std::fs::read_to_string(unit(SERVICES[1])).unwrap();
    assert!(once.contains("Type=oneshot") && once.contains("SuccessExitStatus=2 75"));
    let timer = std::fs::read_to_string(unit(TIMER)).unwrap();
    assert!(timer.contains("Unit=synqall-reconciler-once.service"));
}
