//! Test harness: one throwaway PostgreSQL cluster per test binary (the library's own
//! `LocalCluster`), a fresh database per test with the same Supabase stand-in `demo` uses,
//! helpers to plant data, and runners for the real binary.
//!
//! - [`cluster`]: the shared cluster, clusters of their own, connecting.
//! - [`fixtures`]: [`TestDb`] and the data helpers.
//! - [`runner`]: [`run_bin`] / [`Run`] and [`Daemon`].
//! - [`damaged`]: the damaged database most end-to-end tests start from.
//! - [`http`]: scraping the metrics endpoint.
//! - [`pgbouncer`]: a real pgbouncer in front of a test cluster.
//! - [`promtool`]: real scrapes fed to the shipped alert rules.
//! - [`app`]: a stand-in for the web app writing beside the reconciler.
//!
//! PostgreSQL missing is a failure with a message saying what to install, never a skip.
//! Set `TEST_LOG=1` to see the binary's stderr for every run.

#![allow(dead_code)] // each test binary uses a different subset
#![allow(unused_imports)]

pub mod app;
pub mod cluster;
pub mod damaged;
pub mod fixtures;
pub mod http;
pub mod pgbouncer;
pub mod promtool;
pub mod runner;

pub use cluster::{cluster, cluster_with, connect, empty_cluster};
pub use fixtures::{default_lock_key, outcome, TestDb};
pub use http::{http_get, metrics_once, sample};
pub use runner::{empty_config_file, run_bin, Daemon, Run, BIN, FAST_DAEMON};
