//! Feeding real scrapes of the daemon to the shipped alert rules: `promtool test rules` (Debian's
//! `prometheus` package) with the scraped samples as input series, asking whether an alert
//! fires at a given time.

use std::path::PathBuf;

/// The rules the package ships.
pub fn alert_rules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("monitoring/alerts.yml")
}

/// `promtool`, or a failure saying what to install.
pub fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("promtool not found on PATH: install Debian's prometheus package (apt-get install prometheus)")
    })
}

/// Run promtool with `args`; its output, and whether it succeeded.
pub fn run(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(promtool())
        .args(args)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The samples of an exposition as promtool input series: each scrape one minute after the
/// previous one, the last one held for an hour; every series gets `instance` and `job` labels
/// as a Prometheus scrape would add.
pub fn input_series(scrapes: &[&str]) -> String {
    let parsed: Vec<Vec<(String, String)>> = scrapes.iter().map(|s| samples(s)).collect();
    let last = parsed.last().expect("at least one scrape");
    let mut yaml = String::new();
    for (series, last_value) in last {
        let earlier: Vec<&str> = parsed[..parsed.len() - 1]
            .iter()
            .filter_map(|scrape| {
                scrape
                    .iter()
                    .find(|(s, _)| s == series)
                    .map(|(_, v)| v.as_str())
            })
            .collect();
        let mut values = earlier.join(" ");
        if !values.is_empty() {
            values.push(' ');
        }
        values.push_str(&format!("{last_value}+0x60"));
        yaml.push_str(&format!(
            "      - series: '{series}'\n        values: '{values}'\n"
        ));
    }
    yaml
}

/// `(series with labels, value)` of every sample line.
fn samples(exposition: &str) -> Vec<(String, String)> {
    const TARGET: &str = r#"instance="box:9464",job="synqall-reconciler""#;
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let series = match series.strip_suffix('}') {
                Some(open) => format!("{open},{TARGET}}}"),
                None => format!("{series}{{{TARGET}}}"),
            };
            (series, value.to_string())
        })
        .collect()
}

/// Whether `alert` is firing `minutes` after the first scrape, by the shipped rules. Panics when
/// promtool fails for any other reason (a malformed series, a broken rule file), so "quiet" is
/// never a parse error in disguise.
pub fn fires(scrapes: &[&str], alert: &str, minutes: u32) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let test = format!(
        "rule_files:\n  - {rules}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    \
         input_series:\n{series}    promql_expr_test:\n      - expr: \
         max(ALERTS{{alertname=\"{alert}\",alertstate=\"firing\"}})\n        eval_time: \
         {minutes}m\n        exp_samples:\n          - labels: '{{}}'\n            value: 1\n",
        rules = alert_rules().display(),
        series = input_series(scrapes),
    );
    let path = dir.path().join("scrape.test.yml");
    std::fs::write(&path, &test).unwrap();
    let (ok, output) = run(&["test", "rules", path.to_str().unwrap()]);
    let quiet = output.contains("got: nil") && !output.contains("error");
    assert!(
        ok || quiet,
        "promtool failed:\n{output}\n--- test file:\n{test}"
    );
    ok
}

/// Evaluate each PromQL expression over the scrapes with promtool (expecting nothing, so every
/// expression that returns data is reported too); panics on any parse or evaluation error.
pub fn assert_valid_exprs(scrapes: &[&str], exprs: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let mut tests = String::new();
    for expr in exprs {
        let quoted = serde_json::to_string(expr).unwrap();
        tests.push_str(&format!(
            "      - expr: {quoted}\n        eval_time: 5m\n        exp_samples: []\n"
        ));
    }
    let test = format!(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    \
         input_series:\n{series}    promql_expr_test:\n{tests}",
        series = input_series(scrapes),
    );
    let path = dir.path().join("exprs.test.yml");
    std::fs::write(&path, &test).unwrap();
    let (_, output) = run(&["test", "rules", path.to_str().unwrap()]);
    for bad in ["parse error", "error evaluating", "yaml:", "unmarshal"] {
        assert!(
            !output.contains(bad),
            "{bad}:\n{output}\n--- test file:\n{test}"
        );
    }
    assert!(output.contains("Unit Testing"), "{output}");
}
