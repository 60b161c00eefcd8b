//! The load generator's credentials: the tokens it sends, minted from the
//! system's secret (`AUTH_SECRET`) for the admin and every owner of the
//! seed's wallets, and `loadgen token`, which mints one for a person or a
//! script. The rules the tokens meet are `service_kit::auth`'s.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use service_kit::auth::{Bearers, Keys, Subject, unix_now};
use workload::Workload;

use crate::cli::TokenArgs;

/// How long a run's tokens last: longer than any run.
const RUN_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Tokens for the admin and every owner of `workload`'s wallets, or none
/// for a system in open mode (`secret` `None`).
pub fn bearers(secret: Option<&str>, workload: &Workload) -> anyhow::Result<Option<Arc<Bearers>>> {
    let Some(secret) = secret else {
        return Ok(None);
    };
    let keys = Keys::new(secret.as_bytes())?;
    let owners: Vec<String> = workload.wallets().into_iter().map(|w| w.user_id).collect();
    let bearers = Bearers::mint(
        &keys,
        owners.iter().map(String::as_str),
        unix_now(),
        RUN_TOKEN_TTL,
    )
    .context("a workload user id is not a valid user id")?;
    Ok(Some(Arc::new(bearers)))
}

/// An HTTP client that sends `bearer` (an `Authorization` value) with
/// every request, and gives up on one after `timeout`.
pub fn client(bearer: Option<&str>, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    if let Some(bearer) = bearer {
        let mut value = HeaderValue::from_str(bearer).context("a token is a header value")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .build()
        .context("building the HTTP client")
}

/// `loadgen token`: prints a token for the user or the admin.
pub fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let keys = Keys::new(args.auth_secret.as_bytes())
        .context("AUTH_SECRET must be the services' secret")?;
    let subject = match &args.user {
        Some(user) => {
            Subject::user(user).map_err(|_| anyhow::anyhow!("{user:?} is not a valid user id"))?
        }
        None => Subject::Admin,
    };
    let now = unix_now();
    println!("{}", keys.mint(&subject, now, args.ttl));
    let expires = chrono::DateTime::from_timestamp(
        i64::try_from(now.saturating_add(args.ttl.as_secs())).unwrap_or(i64::MAX),
        0,
    );
    if let Some(expires) = expires {
        eprintln!("valid until {}", expires.to_rfc3339());
    }
    Ok(())
}
