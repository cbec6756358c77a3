//! Scratch schemas for tests and benchmarks: each run gets its own empty PostgreSQL schema on
//! one shared server, so runs go in parallel without touching each other's tables.
//!
//! Every scratch schema is named [`SCRATCH_SCHEMA_PREFIX`]`<label>_<uuid>`, so that the test
//! command can drop what earlier runs left behind (`scripts/test.sh` does, before it starts).

use super::{Db, SqlError};

/// The prefix of every scratch schema's name.
pub const SCRATCH_SCHEMA_PREFIX: &str = "sgtest_";

/// Creates a fresh, empty schema and returns `database_url` with every connection's
/// `search_path` set to it. `label` (lowercase letters and digits) names who made it.
pub async fn scratch_schema_url(database_url: &str, label: &str) -> Result<String, SqlError> {
    if label.is_empty()
        || !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(SqlError::UnsupportedUrl(format!(
            "scratch schema label {label:?} must be lowercase letters and digits"
        )));
    }
    let schema = format!(
        "{SCRATCH_SCHEMA_PREFIX}{label}_{}",
        uuid::Uuid::new_v4().simple()
    );
    let admin = Db::connect(database_url, 1).await?;
    // The name is built above from a checked label and a uuid: nothing to inject.
    let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(admin.pool())
        .await;
    admin.close().await;
    created?;
    let separator = if database_url.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{database_url}{separator}options[search_path]={schema}"
    ))
}
