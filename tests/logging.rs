//! Log lines as people and collectors read them: every line of a pass parses as JSON under
//! `--log-format json`, with typed fields.

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
