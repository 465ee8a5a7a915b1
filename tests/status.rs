//! `status`: the latest passes and the time since the last success, as a table and as JSON,
//! read from the journal by name.

mod common;

use common::damaged::damaged_db;

#[tokio::test]
async fn status_shows_the_run_id_of_the_pass_as_a_table_and_as_json() {
    let (db, _) = damaged_db().await;
    let before = db.run(&["status"], &[]).await;
    assert_eq!(before.code(), 0, "{}", before.stderr);
    assert!(
        before.stdout.contains("last successful pass: never"),
        "{}",
        before.stdout
    );

    let pass = db.run(&["--reconcile-now"], &[]).await;
    let summary = pass.grep("reconcile pass finished");
    let run_id = summary[0]
        .split_whitespace()
        .find_map(|f| f.strip_prefix("run_id="))
        .unwrap()
        .to_string();

    let table = db.run(&["status"], &[]).await;
    assert_eq!(table.code(), 0, "{}", table.stderr);
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with(&run_id))
        .unwrap_or_else(|| panic!("{run_id} not in:\n{}", table.stdout));
    assert!(row.ends_with(" ok"), "{row}");
    assert!(table.stdout.contains("s ago)"), "{}", table.stdout);

    let json = db.run(&["status", "--json"], &[]).await;
    assert_eq!(json.code(), 0, "{}", json.stderr);
    let value: serde_json::Value =
        serde_json::from_str(&json.stdout).expect("status --json is JSON");
    let runs = value["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["id"], run_id.as_str());
    assert_eq!(runs[0]["drifted"], 4);
    assert_eq!(runs[0]["repaired"], 4);
    assert_eq!(runs[0]["status"], "ok");
    let age = value["seconds_since_last_success"].as_i64().unwrap();
    assert!(
        (0..60).contains(&age),
        "the pass just finished, age {age} s"
    );
}

#[tokio::test]
async fn status_with_limit_0_still_knows_the_last_success() {
    let (db, _) = damaged_db().await;
    let pass = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(pass.code(), 0, "{}", pass.stderr);
    let out = db.run(&["status", "--limit", "0"], &[]).await;
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("last successful pass: 20"),
        "{}",
        out.stdout
    );
    let json = db.run(&["status", "--json", "--limit", "0"], &[]).await;
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(value["last_success_at"].is_string(), "{value}");
    assert_eq!(value["runs"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn status_json_carries_every_column_of_the_run_row() {
    let (db, _) = damaged_db().await;
    let pass = db.run(&["--reconcile-now"], &[]).await;
    let run_id = pass.run_id().to_string();
    let revert = db.run(&["revert", &run_id], &[]).await;
    assert_eq!(revert.code(), 0, "{}", revert.stderr);
    let json = db.run(&["status", "--json"], &[]).await;
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let runs = value["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        let id: uuid::Uuid = run["id"].as_str().unwrap().parse().unwrap();
        let row = db
            .client
            .query_one(
                "SELECT mode, host, status, orgs_checked, drifted, repaired, lost_race,
                        orphans_fixed, orphans_left, reverted_run_id::text, period_resets
                   FROM reconciler.runs WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(run["mode"], row.get::<_, String>("mode"), "{run}");
        assert_eq!(run["host"], row.get::<_, String>("host"), "{run}");
        assert_eq!(run["status"], row.get::<_, String>("status"), "{run}");
        for column in [
            "orgs_checked",
            "drifted",
            "repaired",
            "lost_race",
            "orphans_fixed",
            "orphans_left",
            "period_resets",
        ] {
            let expected = row
                .get::<_, Option<i32>>(column)
                .map_or(serde_json::Value::Null, |n| n.into());
            assert_eq!(run[column], expected, "{column} of {run}");
        }
        let reverted = row
            .get::<_, Option<String>>("reverted_run_id")
            .map_or(serde_json::Value::Null, |s| s.into());
        assert_eq!(run["reverted_run_id"], reverted, "{run}");
    }
}

#[tokio::test]
async fn status_max_age_exits_2_when_the_last_success_is_older_or_missing() {
    let (db, _) = damaged_db().await;
    let never = db.run(&["status", "--max-age", "600"], &[]).await;
    assert_eq!(never.code(), 2, "no success yet: {}", never.stdout);
    let pass = db.run(&["--reconcile-now"], &[]).await;
    assert_eq!(pass.code(), 0, "{}", pass.stderr);
    let fresh = db.run(&["status", "--max-age", "600"], &[]).await;
    assert_eq!(fresh.code(), 0, "{}", fresh.stdout);
    db.exec(
        "UPDATE reconciler.runs SET started_at = now() - interval '2 hours',
                                    finished_at = now() - interval '2 hours'",
    )
    .await;
    let stale = db.run(&["status", "--max-age", "600", "--json"], &[]).await;
    assert_eq!(stale.code(), 2, "{}", stale.stdout);
    let report: serde_json::Value = serde_json::from_str(&stale.stdout).expect("JSON");
    assert!(report["seconds_since_last_success"].as_i64().unwrap() >= 7200);
}

#[tokio::test]
async fn status_and_doctor_json_print_json_when_the_database_is_down() {
    for command in ["status", "doctor"] {
        let out = common::run_bin(
            &[command, "--json"],
            &[(
                "DATABASE_URL",
                "postgres://u:secret-pw@127.0.0.1:1/postgres",
            )],
            &[],
        )
        .await;
        assert_eq!(out.code(), 1, "{}", out.stderr);
        let body: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{command} --json stdout is not JSON ({e}): {:?}",
                out.stdout
            )
        });
        assert_eq!(body["exit_code"], 1, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("connect"),
            "{body}"
        );
        assert!(!out.stdout.contains("secret-pw"), "{}", out.stdout);
    }
    // A configuration error too (exit 78).
    let out = common::run_bin(&["status", "--json"], &[], &[]).await;
    assert_eq!(out.code(), 78, "{}", out.stderr);
    let body: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on exit 78");
    assert_eq!(body["exit_code"], 78, "{body}");
}
