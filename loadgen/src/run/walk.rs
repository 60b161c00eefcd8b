//! The walk after convergence: every page of every wallet's history and of
//! every user's activity, read through the history API and written to
//! `walk.json`, where the checker holds it against the ledger
//! (`history-reads-match`). The wallets and their owners come from the
//! wallet database itself, so a wallet the load never made is walked too.

use std::{collections::BTreeSet, path::Path, time::Duration};

use anyhow::Context;
use futures::{StreamExt, stream};
use run_log::{ShownPage, Walk, WalkedList};
use serde::Deserialize;
use sqlx::{Connection, PgConnection, Row};
use uuid::Uuid;

/// Entries per page: the API's largest, so few requests cover a wallet.
const PAGE_LIMIT: i64 = history::api::PAGE_MAX;
/// Lists walked at once.
const WALKERS: usize = 8;
/// A list longer than this many pages is taken to be a cursor loop.
const PAGES_MAX: u32 = 10_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Envelope {
    data: Option<ShownPage>,
}

/// Walks every list (as the admin, with `admin_bearer`; with nothing in
/// open mode) and writes `walk.json` into `run_dir`.
pub async fn run(
    wallet_db: &str,
    history_url: &str,
    admin_bearer: Option<&str>,
    run_dir: &Path,
) -> anyhow::Result<Walk> {
    let owners = owners(wallet_db).await?;
    let users: BTreeSet<&str> = owners.iter().map(|(_, user)| user.as_str()).collect();
    println!(
        "walking every page of {} wallets' history and {} users' activity ...",
        owners.len(),
        users.len()
    );
    let http = crate::auth::client(admin_bearer, REQUEST_TIMEOUT)?;
    let base =
        reqwest::Url::parse(history_url).with_context(|| format!("history URL {history_url:?}"))?;
    let wallet_lists = owners
        .iter()
        .map(|(id, _)| list_url(&base, "wallets", &id.to_string(), "history"));
    let user_lists = users
        .iter()
        .map(|user| list_url(&base, "users", user, "activity"));
    let ids = owners
        .iter()
        .map(|(id, _)| id.to_string())
        .chain(users.iter().map(|u| (*u).to_owned()));
    let lists: Vec<WalkedList> = stream::iter(ids.zip(wallet_lists.chain(user_lists)))
        .map(|(id, url)| walk_list(&http, id, url))
        .buffered(WALKERS)
        .collect()
        .await;
    let (wallets, users) = lists.split_at(owners.len());
    let walk = Walk {
        wallets: wallets.to_vec(),
        users: users.to_vec(),
    };
    let pages: u32 = lists.iter().map(|l| l.pages).sum();
    let entries: usize = lists.iter().map(|l| l.entries.len()).sum();
    let failed = lists.iter().filter(|l| l.error.is_some()).count();
    println!("walked {pages} pages, {entries} entries ({failed} lists stopped early)");
    let path = run_dir.join("walk.json");
    let json = serde_json::to_vec(&walk).context("serializing the walk")?;
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    Ok(walk)
}

/// Every wallet with its owner, by id.
async fn owners(wallet_db: &str) -> anyhow::Result<Vec<(Uuid, String)>> {
    let mut db = PgConnection::connect(wallet_db)
        .await
        .context("connecting to the wallet database for the walk")?;
    let rows = sqlx::query("SELECT id, user_id FROM wallets ORDER BY id")
        .fetch_all(&mut db)
        .await
        .context("listing the wallets to walk")?;
    rows.iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("user_id")?)))
        .collect::<Result<_, sqlx::Error>>()
        .context("reading the wallets to walk")
}

/// `{base}/{collection}/{id}/{list}`, with `id` as one escaped segment.
fn list_url(base: &reqwest::Url, collection: &str, id: &str, list: &str) -> reqwest::Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("an http URL has a path")
        .pop_if_empty()
        .extend([collection, id, list]);
    url
}

/// Follows one list's cursors to its end.
async fn walk_list(http: &reqwest::Client, id: String, url: reqwest::Url) -> WalkedList {
    let mut list = WalkedList {
        id,
        pages: 0,
        entries: Vec::new(),
        error: None,
    };
    let mut cursor: Option<String> = None;
    loop {
        let mut page_url = url.clone();
        page_url
            .query_pairs_mut()
            .append_pair("limit", &PAGE_LIMIT.to_string());
        if let Some(cursor) = &cursor {
            page_url.query_pairs_mut().append_pair("cursor", cursor);
        }
        let page = match fetch_page(http, page_url).await {
            Ok(page) => page,
            Err(error) => {
                list.error = Some(format!("{error:#}"));
                return list;
            }
        };
        list.pages += 1;
        list.entries.extend(page.entries);
        match page.next_cursor {
            None => return list,
            Some(_) if list.pages >= PAGES_MAX => {
                list.error = Some(format!("still a cursor after {PAGES_MAX} pages"));
                return list;
            }
            Some(next) => cursor = Some(next),
        }
    }
}

async fn fetch_page(http: &reqwest::Client, url: reqwest::Url) -> anyhow::Result<ShownPage> {
    let response = http
        .get(url.clone())
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .with_context(|| format!("reading GET {url}"))?;
    if !status.is_success() {
        anyhow::bail!(
            "GET {url} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    serde_json::from_slice::<Envelope>(&body)
        .with_context(|| format!("GET {url} answered a body that is not a page"))?
        .data
        .with_context(|| format!("GET {url} answered no page in its envelope"))
}
