//! Fault injection for the tests, compiled into debug builds only: with
//! `SYNQALL_RECONCILER_TEST_FAULT=<point>` in the environment, [`hit`] at that point panics, so
//! a test can prove that a panic inside a pass still closes its run row and alerts; with
//! `SYNQALL_RECONCILER_TEST_FAULT=pause:<point>:<dir>`, [`pause`] at that point holds the pass
//! until the test lets it go, so a test can commit a change at an exact moment of a pass.
//! Release builds have no such variable (it is then an unknown one, refused like any other).

/// The environment variable naming the fault point (debug builds only).
pub use crate::config::TEST_FAULT_ENV as FAULT_ENV;

/// Panic here if the tests asked for a fault at `point`.
pub fn hit(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var(FAULT_ENV).is_ok_and(|p| p == point) {
        panic!("fault injected at {point} ({FAULT_ENV})");
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// Hold the pass here while the tests ask for it: with `pause:<point>:<dir>`, create
/// `<dir>/paused`, then wait (at most 60 s) until `<dir>/resume` exists.
pub async fn pause(point: &str) {
    #[cfg(debug_assertions)]
    if let Some(dir) = std::env::var(FAULT_ENV).ok().and_then(|v| {
        v.strip_prefix("pause:")
            .and_then(|rest| rest.strip_prefix(point))
            .and_then(|rest| rest.strip_prefix(':'))
            .map(std::path::PathBuf::from)
    }) {
        let _ = std::fs::write(dir.join("paused"), point);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !dir.join("resume").exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
