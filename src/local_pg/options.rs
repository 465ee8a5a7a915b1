//! How a throwaway cluster is tuned.

/// Tuning of a throwaway cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `fsync=off` and `full_page_writes=off`: fine for data nobody will miss, wrong for
    /// benchmarks of durability costs. Commits stay synchronous, so a crash-restart of the
    /// server (not of the machine) loses no committed transaction.
    pub unsafe_fast: bool,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
    /// The bootstrap superuser's name (`postgres`; `supabase_admin` to build a Supabase-like
    /// cluster, where `postgres` is an ordinary role).
    pub superuser: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            unsafe_fast: true,
            settings: Vec::new(),
            superuser: "postgres".into(),
        }
    }
}
