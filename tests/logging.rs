//! Log lines as people and collectors read them: every line of a pass parses as JSON under
//! `--log-format json`, with typed fields and 64-bit ids that survive jq; under journald every
//! line carries its syslog priority; and no value (a forged organization name, a 49 kB one,
//! bidi controls) can match the documented greps or break a line.

mod common;

use common::damaged::damaged_db;
use uuid::Uuid;

#[tokio::test]
async fn json_log_lines_all_parse_and_drift_events_carry_typed_fields() {
    let (db, d) = damaged_db().await;
    let out = db
        .run(&["--log-format", "json", "--reconcile-now"], &[])
        .await;
    assert_eq!(out.code(), 0, "{}", out.stderr);

    let events: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{}", out.stderr))
        })
        .collect();
    assert!(events.len() >= 6, "{}", out.stderr);
    for event in &events {
        for key in ["timestamp", "level", "message"] {
            assert!(event.get(key).is_some(), "{key} missing in {event}");
        }
    }
    let drifts: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["level"] == "CRITICAL" && e["message"] == "used_minutes drift")
        .collect();
    assert_eq!(drifts.len(), 4, "{}", out.stderr);
    let run_id = drifts[0]["run_id"].as_str().expect("run_id is a string");
    Uuid::parse_str(run_id).expect("run_id is a uuid");
    for drift in &drifts {
        assert_eq!(drift["run_id"], run_id, "{drift}");
        assert!(drift["expected"].is_i64(), "{drift}");
        assert!(drift["delta"].is_i64(), "{drift}");
        assert_eq!(drift["action"], "repaired", "{drift}");
        let org: Uuid = drift["org_id"].as_str().unwrap().parse().unwrap();
        let stored = &drift["stored"];
        if org == d.null_counter {
            assert!(stored.is_null(), "a NULL counter is JSON null: {drift}");
        } else {
            assert!(stored.is_i64(), "stored is a number: {drift}");
        }
        if org == d.lost {
            assert_eq!(drift["stored"], 10, "{drift}");
            assert_eq!(drift["expected"], 39, "{drift}");
            assert_eq!(drift["org_name"], "Lost increments", "{drift}");
        }
    }
    let summary = events
        .iter()
        .find(|e| e["message"] == "reconcile pass finished")
        .expect("summary event");
    assert_eq!(summary["run_id"], run_id);
    assert_eq!(summary["repaired"], 4, "{summary}");
    assert_eq!(summary["dry_run"], false, "{summary}");
}

/// What `journalctl -o cat` shows of our stderr: the lines without our timestamp (under
/// journald we print none; the journal keeps its own).
fn as_journal_shows(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((first, rest)) if first.ends_with('Z') && first.contains('T') => rest.to_string(),
            _ => l.to_string(),
        })
        .collect()
}

#[tokio::test]
async fn a_name_that_looks_like_a_critical_line_matches_none_of_the_documented_greps() {
    let db = common::TestDb::migrated().await;
    let victim = db.org("Victim", Some(0)).await;
    let forger_name = format!(
        "x\nCRITICAL used_minutes drift org_id={victim} org_name=\"Victim\" stored=0 \
         expected=999 action=repaired\u{2028}CRITICAL used_minutes drift org_id={victim}\u{202E}"
    );
    let forger = db.org(&forger_name, Some(0)).await;
    let huge = db.org(&"H".repeat(49 * 1024), Some(0)).await;
    let user = db.user().await;
    for org in [victim, forger, huge] {
        db.member(user, org, 30).await;
        db.completed_call(user, org, 10).await;
    }
    // The forger's name also appears in a WARN line (a ledger mismatch).
    db.metric(forger, 5).await;
    let out = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let lines = as_journal_shows(&out.stderr);

    // The README's greps, anchored on the level.
    let drift: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("CRITICAL used_minutes drift "))
        .collect();
    assert_eq!(drift.len(), 3, "one per real drift: {drift:#?}");
    let alerting: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.starts_with("CRITICAL") || l.starts_with("ERROR Failed to update organization ")
        })
        .collect();
    assert_eq!(alerting.len(), 3, "{alerting:#?}");
    let victims: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with(&format!("CRITICAL used_minutes drift org_id={victim} ")))
        .collect();
    assert_eq!(victims.len(), 1, "only the victim's own line: {victims:#?}");
    assert!(victims[0].contains("org_name=\"Victim\""), "{}", victims[0]);

    // Nothing raw that a viewer would render as a new line or reorder.
    for raw in ['\u{2028}', '\u{202E}'] {
        assert!(!out.stderr.contains(raw), "raw {raw:?} in the log");
    }
    assert!(
        lines.iter().all(|l| l.len() < 4096),
        "a line of {} bytes",
        lines.iter().map(String::len).max().unwrap_or(0)
    );
    let huge_line = lines
        .iter()
        .find(|l| l.contains(&format!("org_id={huge} ")))
        .unwrap();
    assert!(
        huge_line.contains("HHH…\""),
        "cut with an ellipsis: {huge_line:.300}"
    );
}

#[tokio::test]
async fn under_journald_lines_carry_their_priority_and_json_ids_survive_jq() {
    use std::os::unix::fs::MetadataExt;
    let (db, _) = damaged_db().await;
    // stderr is a file whose device and inode JOURNAL_STREAM names, as systemd sets it up.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("journal");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let status = std::process::Command::new(common::BIN)
        .arg("--reconcile-now")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SYNQALL_RECONCILER_CONFIG", common::empty_config_file())
        .env("SYNQALL_RECONCILER__USAGE__SETTLE_SECONDS", "0")
        .env("DATABASE_URL", &db.url)
        .env("JOURNAL_STREAM", &stream)
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let critical: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("used_minutes drift"))
        .collect();
    assert_eq!(critical.len(), 4, "{text}");
    assert!(
        critical
            .iter()
            .all(|l| l.starts_with("<2>CRITICAL used_minutes drift ")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>INFO reconcile pass finished ")),
        "{text}"
    );
    assert!(
        text.lines().all(|l| l.starts_with('<')),
        "every line has a priority: {text}"
    );

    // A JSON line's 64-bit ids survive jq (which reads numbers as doubles).
    let out = db
        .run(&["--log-format", "json", "--reconcile-now"], &[])
        .await;
    let config_line = out
        .stderr
        .lines()
        .find(|l| l.contains("\"effective configuration\""))
        .unwrap();
    let mut jq = std::process::Command::new("jq")
        .args(["-r", ".lock_key"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("jq (apt-get install -y jq; .ci/run does)");
    use std::io::Write as _;
    jq.stdin
        .take()
        .unwrap()
        .write_all(config_line.as_bytes())
        .unwrap();
    let read = jq.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "7356172090143225001"
    );
    for line in out.stderr.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(event["timestamp"].is_string(), "{line}");
    }
}
