use std::time::Duration;

use serde_json::json;

use crate::helpers::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_an_exact_image_of_the_ledger() {
    let t = start().await;
    let wallets = t.wallets(6, "1000").await;
    let mut refused = 0;
    for i in 0..60usize {
        let (from, to) = (&wallets[i % 6], &wallets[(i * 5 + 1) % 6]);
        if from == to {
            continue;
        }
        // Every tenth asks for more than any wallet holds: refused, no event.
        let amount = if i % 10 == 9 {
            "5000".to_owned()
        } else {
            format!("{}.{:04}", i % 13 + 1, i * 37 % 10_000)
        };
        let (status, body) = t
            .post(
                &format!("/wallets/{from}/transfer"),
                json!({"to_wallet_id": to, "amount": amount}),
                None,
            )
            .await;
        match status {
            200 => {}
            422 => {
                assert_eq!(body["code"], "insufficient_funds");
                refused += 1;
            }
            other => panic!("transfer answered {other}: {body}"),
        }
    }
    assert!(refused > 0);
    let ledger = t.converge_exactly(Duration::from_secs(30)).await;
    // 6 created + 6 funded + the successful transfers' two legs each.
    assert_eq!((ledger - 12) % 2, 0);
    let transferred = (ledger - 12) / 2;
    assert_eq!(
        transferred + refused,
        60,
        "every transfer answered 200 or 422"
    );

    // Both services' own figures, read by a Prometheus text parser.
    let wallet = t.scrape(&t.system.wallet_url).await;
    let transfer_route = [("route", "/wallets/{id}/transfer"), ("method", "POST")];
    assert_eq!(
        wallet.value(
            "http_request_duration_seconds",
            &[&transfer_route[..], &[("status", "200")]].concat()
        ),
        Some(transferred as f64)
    );
    assert_eq!(
        wallet.value(
            "http_request_duration_seconds",
            &[&transfer_route[..], &[("status", "422")]].concat()
        ),
        Some(refused as f64)
    );
    assert_eq!(wallet.value("outbox_backlog", &[]), Some(0.0));
    assert_eq!(
        wallet.value("outbox_oldest_unpublished_age_seconds", &[]),
        Some(0.0)
    );
    assert_eq!(
        wallet.value("relay_events_published_total", &[]),
        Some(ledger as f64)
    );
    assert!(
        wallet
            .value("relay_rounds_total", &[("outcome", "ok")])
            .unwrap()
            >= 1.0
    );
    assert!(wallet.value("db_pool_max_connections", &[]).unwrap() >= 1.0);
    assert!(
        wallet
            .value("db_pool_connections", &[("state", "idle")])
            .is_some()
    );
    let history = t.scrape(&t.system.history_url).await;
    assert_eq!(
        history.value("history_events_total", &[("result", "applied")]),
        Some(ledger as f64)
    );
    assert_eq!(
        history.value("history_events_total", &[("result", "dead_lettered")]),
        Some(0.0)
    );
    // librdkafka reports each assigned partition's lag every second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lags = t.scrape(&t.system.history_url).await.all("consumer_lag");
        if !lags.is_empty() && lags.iter().all(|lag| *lag == 0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "consumer lag never 0: {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The API serves it newest first, in pages.
    let wallet = &wallets[0];
    let (status, page) = t
        .get_history(&format!("/wallets/{wallet}/history?limit=3"))
        .await;
    assert_eq!(status, 200);
    let entries = page["data"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] == w[1] + 1), "{seqs:?}");
    let cursor = page["data"]["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_owned();
    let (_, next) = t
        .get_history(&format!(
            "/wallets/{wallet}/history?limit=3&cursor={cursor}"
        ))
        .await;
    let first_of_next = next["data"]["entries"][0]["seq"].as_i64().unwrap();
    assert_eq!(first_of_next, seqs[2] - 1);
    let balance_after = entries[0]["balance_after"].as_str().unwrap().to_owned();
    let (_, wallet_view) = {
        let url = format!("{}/wallets/{wallet}", t.system.wallet_url);
        let body: serde_json::Value = t.http.get(url).send().await.unwrap().json().await.unwrap();
        (200, body)
    };
    assert_eq!(wallet_view["data"]["balance"], balance_after.as_str());

    // A user's activity spans their wallets, newest first.
    let (status, activity) = t.get_history("/users/user0/activity?limit=500").await;
    assert_eq!(status, 200);
    let times: Vec<&str> = activity["data"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["committed_at"].as_str().unwrap())
        .collect();
    assert!(times.len() >= 4);
    assert!(
        activity["data"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["user_id"] == "user0")
    );
    assert!(activity["data"]["next_cursor"].is_null());

    // Bad queries are 400s with codes.
    for (path, code) in [
        (
            format!("/wallets/{wallet}/history?limit=0"),
            "invalid_limit",
        ),
        (
            format!("/wallets/{wallet}/history?limit=501"),
            "invalid_limit",
        ),
        (
            format!("/wallets/{wallet}/history?cursor=abc"),
            "invalid_cursor",
        ),
        ("/wallets/nope/history".to_owned(), "invalid_wallet_id"),
        (
            "/users/user0/activity?cursor=1_2".to_owned(),
            "invalid_cursor",
        ),
    ] {
        let (status, body) = t.get_history(&path).await;
        assert_eq!(
            (status, body["code"].as_str().unwrap()),
            (400, code),
            "{path}"
        );
    }
    let health = t.history_health().await;
    assert!(health.starts_with("OK\n"), "{health}");
    assert!(health.contains("consumer: running"), "{health}");
    t.system.shutdown().await.unwrap();
}
