//! The shipped alert rules (`monitoring/alerts.yml`): their own promtool unit tests pass, and
//! fed with real scrapes of a daemon that cannot log in, the stall and database alerts fire.
//! (The partial-pass alert is fed in tests/outcomes.rs.)

mod common;

use common::{promtool, Daemon, TestDb};

#[test]
fn the_rules_check_and_their_unit_tests_pass() {
    let rules = promtool::alert_rules();
    let (ok, out) = promtool::run(&["check", "rules", rules.to_str().unwrap()]);
    assert!(ok, "{out}");
    let tests = rules.with_file_name("alerts.test.yml");
    let (ok, out) = promtool::run(&["test", "rules", tests.to_str().unwrap()]);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn a_daemon_with_a_wrong_password_fires_the_stalled_alert_from_its_real_scrape() {
    let db = TestDb::migrated().await;
    let cluster = common::cluster();
    let url = cluster.url_as(cluster.superuser(), "not-the-password", &db.name);
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let mut daemon = Daemon::start(&url, &[("SYNQALL_RECONCILER__METRICS__LISTEN", &addr)]);
    daemon.wait_for("reconcile pass failed", 2, 20).await;
    let (status, body) = common::http_get(&addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait(15).await, Some(0));

    // What a scrape shows from the first minute: no success known, the database refusing.
    for (series, value) in [
        ("synqall_reconciler_last_success_timestamp_seconds", 0.0),
        ("synqall_reconciler_database_up", 0.0),
        ("synqall_reconciler_stalled_after_seconds", 1800.0),
        ("synqall_reconciler_passes_total{outcome=\"ok\"}", 0.0),
        ("synqall_reconciler_lock_held", 0.0),
    ] {
        assert_eq!(common::sample(&body, series), value, "{series}:\n{body}");
    }
    assert!(common::sample(&body, "synqall_reconciler_passes_total{outcome=\"failed\"}") >= 2.0);
    assert!(
        body.contains("synqall_reconciler_build_info{version=\""),
        "{body}"
    );
    assert!(!body.contains("not-the-password"), "{body}");

    // The same samples, held: the stall alert fires once alert.stalled_after_seconds and its
    // `for` have passed, not before; the database alert after its 5 minutes.
    every_name_the_rules_and_dashboard_use_is_exposed(&body);

    assert!(promtool::fires(&[&body], "SynqallReconcilerStalled", 40));
    assert!(
        !promtool::fires(&[&body], "SynqallReconcilerStalled", 20),
        "fired before alert.stalled_after_seconds"
    );
    assert!(promtool::fires(
        &[&body],
        "SynqallReconcilerDatabaseDown",
        10
    ));
    assert!(!promtool::fires(&[&body], "SynqallReconcilerPartial", 10));
}

/// The metric names in the rules and in the dashboard's queries all exist in a real scrape, and
/// every dashboard query is valid PromQL (evaluated by promtool over that scrape).
fn every_name_the_rules_and_dashboard_use_is_exposed(scrape: &str) {
    let dashboard_path = promtool::alert_rules().with_file_name("dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard_path).unwrap())
            .expect("dashboard.json is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("a target with an expr")
                .to_string()
        })
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules = std::fs::read_to_string(promtool::alert_rules()).unwrap();
    let exposed: Vec<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for text in exprs.iter().map(String::as_str).chain([rules.as_str()]) {
        for (at, _) in text.match_indices("synqall_reconciler_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exposed.contains(&name.as_str()),
                "{name} is not in a scrape:\n{scrape}"
            );
        }
    }
    let grafana_free: Vec<String> = exprs
        .iter()
        .map(|e| e.replace("$__rate_interval", "5m").replace("$job", ".*"))
        .collect();
    promtool::assert_valid_exprs(&[scrape], &grafana_free);
}
