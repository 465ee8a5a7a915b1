//! What the application's schema looks like, checked before each pass: every column the
//! reconciler reads must exist (a missing one is a clear error naming it), and the types of the
//! duration and metric columns decide how minutes are rounded.

use tokio_postgres::GenericClient;

use super::{DbError, QueryContext};

/// Columns the pass cannot work without, as `(table, column)` in schema `public`.
const REQUIRED_COLUMNS: &[(&str, &str)] = &[
    ("organizations", "id"),
    ("organizations", "name"),
    ("organizations", "used_minutes"),
    ("organizations", "updated_at"),
    ("calls", "id"),
    ("calls", "user_id"),
    ("calls", "organization_id"),
    ("calls", "status"),
    ("calls", "duration_minutes"),
    ("calls", "created_at"),
    ("usage_metrics", "organization_id"),
    ("usage_metrics", "metric_type"),
    ("usage_metrics", "metric_value"),
    ("usage_metrics", "created_at"),
    ("user_organizations", "user_id"),
    ("user_organizations", "organization_id"),
];

/// How a minutes column is stored, which decides whether rounding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinutesType {
    /// smallint/integer: summed as is (sum(int4) is bigint, and fast).
    Integer,
    /// bigint: summed as is, cast back to bigint.
    BigInt,
    /// numeric/real/double: rounded per row by `usage.rounding`.
    Fractional,
}

impl MinutesType {
    fn from_pg(data_type: &str) -> Option<Self> {
        match data_type {
            "smallint" | "integer" => Some(Self::Integer),
            "bigint" => Some(Self::BigInt),
            "numeric" | "real" | "double precision" => Some(Self::Fractional),
            _ => None,
        }
    }
}

/// How `organizations.used_minutes` is stored: what a counter may hold decides which values a
/// repair may write, and a fractional type needs its values checked for whole minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterType {
    SmallInt,
    Integer,
    BigInt,
    /// numeric, real or double precision: works while the values are whole minutes.
    Fractional,
}

impl CounterType {
    fn from_pg(data_type: &str) -> Option<Self> {
        match data_type {
            "smallint" => Some(Self::SmallInt),
            "integer" => Some(Self::Integer),
            "bigint" => Some(Self::BigInt),
            "numeric" | "real" | "double precision" => Some(Self::Fractional),
            _ => None,
        }
    }

    /// The largest value a repair may write.
    pub fn max(self) -> i64 {
        match self {
            Self::SmallInt => i64::from(i16::MAX),
            Self::Integer => i64::from(i32::MAX),
            Self::BigInt | Self::Fractional => i64::MAX,
        }
    }

    /// The SQL name, for messages.
    pub fn sql_name(self) -> &'static str {
        match self {
            Self::SmallInt => "smallint",
            Self::Integer => "integer",
            Self::BigInt => "bigint",
            Self::Fractional => "numeric",
        }
    }
}

/// The facts about the application schema that shape the pass's queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppSchema {
    pub counter_type: CounterType,
    pub duration_type: MinutesType,
    pub metric_type: MinutesType,
    /// `user_organizations.created_at` exists: the "membership at call time" rule can apply.
    pub membership_created_at: bool,
    /// `organizations.max_minutes_monthly` exists as an integer: over-quota warnings apply.
    pub max_minutes_monthly: bool,
}

const APP_COLUMNS: &str = include_str!("sql/app_columns.sql");

/// Inspect `public`'s tables.
///
/// # Errors
/// [`DbError::Schema`] naming every missing column, or a non-numeric minutes column.
pub async fn inspect(client: &impl GenericClient) -> Result<AppSchema, DbError> {
    let rows = client
        .query(APP_COLUMNS, &[])
        .await
        .context("inspect the application schema")?;
    let find = |table: &str, column: &str| {
        rows.iter()
            .find(|r| r.get::<_, &str>(0) == table && r.get::<_, &str>(1) == column)
            .map(|r| r.get::<_, String>(2))
    };
    let missing: Vec<String> = REQUIRED_COLUMNS
        .iter()
        .filter(|(t, c)| find(t, c).is_none())
        .map(|(t, c)| format!("public.{t}.{c}"))
        .collect();
    if !missing.is_empty() {
        let hint = if missing
            .iter()
            .any(|m| m == "public.organizations.used_minutes")
        {
            " (used_minutes is added by `synqall-reconciler migrate`)"
        } else {
            ""
        };
        return Err(DbError::Schema {
            detail: format!("missing column(s) {}{hint}", missing.join(", ")),
        });
    }
    let minutes_type = |table: &str, column: &str| {
        let data_type = find(table, column).unwrap_or_default();
        MinutesType::from_pg(&data_type).ok_or_else(|| DbError::Schema {
            detail: format!("public.{table}.{column} is {data_type}, expected a number type"),
        })
    };
    let counter = find("organizations", "used_minutes").unwrap_or_default();
    let counter_type = CounterType::from_pg(&counter).ok_or_else(|| DbError::Schema {
        detail: format!(
            "public.organizations.used_minutes is {counter}; a counter of minutes must be \
             smallint, integer, bigint or numeric"
        ),
    })?;
    Ok(AppSchema {
        counter_type,
        duration_type: minutes_type("calls", "duration_minutes")?,
        metric_type: minutes_type("usage_metrics", "metric_value")?,
        membership_created_at: find("user_organizations", "created_at").is_some(),
        // A quota of another type (numeric, text) is left alone: quota warnings need whole minutes.
        max_minutes_monthly: matches!(
            find("organizations", "max_minutes_monthly").as_deref(),
            Some("smallint" | "integer" | "bigint")
        ),
    })
}
