//! The shipped unit: `systemd-analyze verify` is clean, its security exposure is at most 1.5,
//! and it carries no secret. Needs systemd-analyze (`apt-get install -y systemd`; `.ci/run`
//! installs it): when it is missing these tests fail with that message; they never pass unrun.

use std::path::Path;
use std::process::Command;

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/systemd/synqall-reconciler.service"
);

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
fn unit_verifies_cleanly() {
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(UNIT).unwrap().replace(
        "/usr/local/bin/synqall-reconciler",
        env!("CARGO_BIN_EXE_synqall-reconciler"),
    );
    let path = dir.path().join("synqall-reconciler.service");
    std::fs::write(&path, unit).unwrap();
    let out = systemd_analyze().arg("verify").arg(&path).output().unwrap();
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
fn unit_exposure_is_at_most_1_5() {
    let out = systemd_analyze()
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(Path::new(UNIT))
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
    assert!(score <= 1.5, "exposure {score} > 1.5:\n{stdout}");
}

#[test]
fn unit_holds_no_secret_and_reads_the_url_as_a_credential() {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(!unit.contains("postgres://") && !unit.contains("postgresql://"));
    assert!(!unit.to_lowercase().contains("password"));
    assert!(!unit.contains("Environment=DATABASE_URL"));
    assert!(unit.contains("LoadCredential=database-url:"));
    assert!(unit.contains("DynamicUser=yes"));
    assert!(unit.contains("Type=notify"));
}
