//! Databases on a server the harness reaches by URL: create one, and name
//! its URL.

use anyhow::{Context, Result};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// `admin_url` (any PostgreSQL URL) with its database replaced by `db`.
pub fn database_url_on(admin_url: &str, db: &str) -> Result<String> {
    let mut url = url::Url::parse(admin_url)
        .with_context(|| format!("parsing the PostgreSQL URL {admin_url}"))?;
    url.set_path(&format!("/{}", encode_path_segment(db)));
    Ok(url.into())
}

/// `CREATE DATABASE` (name quoted as an identifier) on the server of
/// `admin_url`, which needs a role allowed to create databases.
pub async fn create_database_on(admin_url: &str, name: &str) -> Result<()> {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .context("connecting to the PostgreSQL admin database")?;
    let sql = format!("CREATE DATABASE {}", quote_identifier(name));
    let result = sqlx::raw_sql(&sql).execute(&mut conn).await;
    let _ = conn.close().await;
    result.with_context(|| format!("creating database {name}"))?;
    Ok(())
}

pub(super) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(super) fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
