//! Who may do what: tokens are checked before anything changes, money
//! leaves a wallet only by its owner's hand, only the admin adds money,
//! users read only their own; open mode checks nothing.

use axum::http::{Method, StatusCode};

use crate::helpers::{spawn_app, spawn_open_app};

#[tokio::test]
async fn a_transfer_out_of_another_users_wallet_is_forbidden_and_moves_nothing() {
    let app = spawn_app().await;
    let alice = app.create_wallet("alice").await;
    let bob = app.create_wallet("bob").await;
    app.fund(&alice, "100").await;
    let counts = app.row_counts().await;

    let as_bob = app.bearer(Some("bob"), 0);
    let key = [("idempotency-key", "bob-takes")];
    let reply = app.transfer_as(&as_bob, &alice, &bob, "30", &key).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{}",
        reply.body
    );
    // Not even the admin moves a user's money.
    let as_admin = app.bearer(None, 0);
    let reply = app.transfer_as(&as_admin, &alice, &bob, "30", &[]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(app.row_counts().await, counts);
    assert_eq!(app.balance(&alice).await, "100.0000");
    assert_eq!(app.balance(&bob).await, "0.0000");

    // The key bob's refused request carried was not burnt: the owner's
    // request with it applies.
    let as_alice = app.bearer(Some("alice"), 0);
    let reply = app.transfer_as(&as_alice, &alice, &bob, "30", &key).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // Replaying alice's key as bob replays nothing to him.
    let reply = app.transfer_as(&as_bob, &alice, &bob, "30", &key).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    assert!(reply.body["data"].is_null(), "{}", reply.body);
    assert_eq!(app.balance(&alice).await, "70.0000");
}

#[tokio::test]
async fn missing_expired_and_forged_tokens_are_401_and_change_nothing() {
    let app = spawn_app().await;
    let alice = app.create_wallet("alice").await;
    let bob = app.create_wallet("bob").await;
    app.fund(&alice, "100").await;
    let counts = app.row_counts().await;

    let valid = app.bearer(Some("alice"), 0);
    let expired = app.bearer(Some("alice"), 3600);
    let (head, _) = valid.rsplit_once('.').unwrap();
    let forged = format!("{head}.c2lnbmVkIGJ5IHNvbWVvbmUgZWxzZQ");
    let body = format!(r#"{{"to_wallet_id":"{bob}","amount":"1"}}"#);
    let transfer = format!("/wallets/{alice}/transfer");
    let fund = format!("/wallets/{alice}/fund");
    for (authorization, code) in [
        ("", "missing_token"),
        (expired.as_str(), "token_expired"),
        (forged.as_str(), "invalid_token"),
        ("Bearer not-a-jwt", "invalid_token"),
        ("Basic YWxpY2U6cHc=", "invalid_token"),
    ] {
        let headers: &[(&str, &str)] = if authorization.is_empty() {
            // An empty value is no token at all.
            &[("authorization", "")]
        } else {
            &[("authorization", authorization)]
        };
        for (method, path, body) in [
            (Method::POST, transfer.as_str(), Some(body.as_str())),
            (Method::POST, fund.as_str(), Some(r#"{"amount":"1"}"#)),
            (Method::POST, "/wallets", Some(r#"{"user_id":"alice"}"#)),
            (Method::GET, &format!("/wallets/{alice}"), None),
            (Method::GET, "/users/alice/wallets", None),
        ] {
            let reply = app.request(method.clone(), path, body, headers).await;
            let expected = if code == "missing_token" {
                // An empty header is a header that names no scheme.
                "invalid_token"
            } else {
                code
            };
            assert_eq!(
                (reply.status, reply.code()),
                (StatusCode::UNAUTHORIZED, expected),
                "{method} {path} with {authorization:?}: {}",
                reply.body
            );
            assert!(
                reply.headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer")
            );
        }
    }
    // No header at all.
    let request = axum::http::Request::post(&fund)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(r#"{"amount":"1"}"#))
        .unwrap();
    let reply = app.send(request).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNAUTHORIZED, "missing_token")
    );
    assert_eq!(app.row_counts().await, counts);
    assert_eq!(app.balance(&alice).await, "100.0000");
}

#[tokio::test]
async fn users_act_for_themselves_and_only_the_admin_funds() {
    let app = spawn_app().await;
    let as_alice = [("authorization", app.bearer(Some("alice"), 0))];
    let as_alice: Vec<(&str, &str)> = as_alice.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let reply = app
        .request(
            Method::POST,
            "/wallets",
            Some(r#"{"user_id":"alice"}"#),
            &as_alice,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let alice = reply.body["data"]["id"].as_str().unwrap().to_owned();
    let bob = app.create_wallet("bob").await;
    let counts = app.row_counts().await;

    for (method, path, body) in [
        (
            Method::POST,
            "/wallets".to_owned(),
            Some(r#"{"user_id":"bob"}"#),
        ),
        (Method::GET, format!("/wallets/{bob}"), None),
        (Method::GET, "/users/bob/wallets".to_owned(), None),
        // A user cannot fund, not even their own wallet.
        (
            Method::POST,
            format!("/wallets/{alice}/fund"),
            Some(r#"{"amount":"5"}"#),
        ),
    ] {
        let reply = app.request(method.clone(), &path, body, &as_alice).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{method} {path}: {}",
            reply.body
        );
    }
    assert_eq!(app.row_counts().await, counts);

    let own = app
        .request(Method::GET, &format!("/wallets/{alice}"), None, &as_alice)
        .await;
    assert_eq!(own.status, StatusCode::OK);
    let listed = app
        .request(Method::GET, "/users/alice/wallets", None, &as_alice)
        .await;
    assert_eq!(listed.body["data"].as_array().map(Vec::len), Some(1));
    // The admin funds, and reads anyone's.
    assert_eq!(app.fund(&alice, "5").await.status, StatusCode::OK);
    assert_eq!(app.balance(&alice).await, "5.0000");
}

#[tokio::test]
async fn open_mode_checks_nothing() {
    let app = spawn_open_app().await;
    let none = [("authorization", "")];
    let create = |user: &'static str| {
        let app = app.clone();
        async move {
            let body = format!(r#"{{"user_id":"{user}"}}"#);
            let reply = app
                .request(Method::POST, "/wallets", Some(&body), &none)
                .await;
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
            reply.body["data"]["id"].as_str().unwrap().to_owned()
        }
    };
    let (alice, bob) = (create("alice").await, create("bob").await);
    let fund = app
        .request(
            Method::POST,
            &format!("/wallets/{alice}/fund"),
            Some(r#"{"amount":"10"}"#),
            &none,
        )
        .await;
    assert_eq!(fund.status, StatusCode::OK, "{}", fund.body);
    let body = format!(r#"{{"to_wallet_id":"{bob}","amount":"4"}}"#);
    let transfer = app
        .request(
            Method::POST,
            &format!("/wallets/{alice}/transfer"),
            Some(&body),
            &none,
        )
        .await;
    assert_eq!(transfer.status, StatusCode::OK, "{}", transfer.body);
    assert_eq!(app.balance(&bob).await, "4.0000");
}
