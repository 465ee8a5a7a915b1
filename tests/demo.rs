//! `demo` end to end: the real binary starts its own cluster, repairs the planted damage, prints
//! a readable report and removes the cluster.

mod common;

use common::run_bin;

#[tokio::test]
async fn demo_repairs_the_planted_damage_and_cleans_up() {
    let out = run_bin(&["demo"], &[], &[]).await;
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    // The report aligns its columns; compare with runs of spaces folded.
    let fold = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let report = fold(&out.stdout);
    for expected in [
        "applied V1__usage_tracking_fix",
        "Before: 66 of 300 organizations",
        "organizations checked 300",
        "orphaned calls attributed 46",
        "left alone: ambiguous 5",
        "left alone: user has no membership 5",
        "After: 0 organizations still differ",
        "OK increment_used_minutes",
        "0 FAIL,",
        "Removing the throwaway cluster",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{}",
            out.stdout
        );
    }
    // Names with a quote and a newline stay on one log line each.
    assert!(
        out.stderr
            .contains(r#"org_name="O'Brien & \"Sons\" Transcription""#),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(r#"org_name="Line\nBreak Ltd""#),
        "{}",
        out.stderr
    );
    // The demo process has exited: no cluster directory of a dead process may remain (the
    // demo sweeps older leftovers when it starts, and removes its own when it ends).
    let run_dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid: i32 = name
                .strip_prefix("synqall-pg-")?
                .split('-')
                .next()?
                .parse()
                .ok()?;
            // SAFETY: signal 0 only checks whether the process exists.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            (!alive).then(|| e.path())
        })
        .collect();
    assert!(
        run_dirs.is_empty(),
        "demo left cluster directories behind: {:?}",
        run_dirs
    );
}

#[tokio::test]
async fn demo_interrupted_with_ctrl_c_removes_its_cluster() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut child = tokio::process::Command::new(common::BIN)
        .arg("demo")
        .env("SYNQALL_RECONCILER_CONFIG", common::empty_config_file())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with("Loading") {
            break;
        }
    }
    let cluster_dirs = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("synqall-pg-{pid}-"))
            })
            .map(|e| e.path())
            .collect()
    };
    assert_eq!(
        cluster_dirs().len(),
        1,
        "the demo's cluster should exist while it runs"
    );
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .expect("demo did not exit after Ctrl-C")
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        cluster_dirs().is_empty(),
        "cluster left behind: {:?}",
        cluster_dirs()
    );
}
