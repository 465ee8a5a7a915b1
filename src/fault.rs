//! Fault injection for the tests, compiled into debug builds only: with
//! `SYNQALL_RECONCILER_TEST_FAULT=<point>` in the environment, [`hit`] at that point panics, so
//! a test can prove that a panic inside a pass still closes its run row and alerts. Release
//! builds have no such variable (it is then an unknown one, refused like any other).

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
