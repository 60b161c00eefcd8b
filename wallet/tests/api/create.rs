use axum::http::{Method, StatusCode};

use crate::helpers::spawn_app;

#[tokio::test]
async fn create_returns_the_wallet_in_the_seed_envelope() {
    let app = spawn_app().await;
    let reply = app
        .request(
            Method::POST,
            "/wallets",
            Some(r#"{"user_id":"alice"}"#),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.body["success"], true);
    assert!(reply.body["message"].is_null());
    assert!(
        reply.body.get("code").is_none(),
        "no code on success: {}",
        reply.body
    );
    let data = &reply.body["data"];
    assert_eq!(data["user_id"], "alice");
    assert_eq!(data["balance"], "0.0000");
    assert!(uuid::Uuid::parse_str(data["id"].as_str().unwrap()).is_ok());
    assert!(data["created_at"].is_string());
    // The created entry is in the ledger and waiting in the outbox.
    assert_eq!(app.row_counts().await, (1, 1, 1));
}

#[tokio::test]
async fn get_and_list_wallets() {
    let app = spawn_app().await;
    let first = app.create_wallet("bob").await;
    let second = app.create_wallet("bob").await;
    app.create_wallet("carol").await;

    let reply = app
        .request(Method::GET, &format!("/wallets/{first}"), None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["data"]["id"], first.as_str());

    let reply = app
        .request(Method::GET, "/users/bob/wallets", None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let ids: Vec<&str> = reply.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);

    let reply = app
        .request(Method::GET, "/users/nobody/wallets", None, &[])
        .await;
    assert_eq!(reply.body["data"], serde_json::json!([]));
}

#[tokio::test]
async fn unknown_and_malformed_wallet_ids() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::new_v4();
    let reply = app
        .request(Method::GET, &format!("/wallets/{unknown}"), None, &[])
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "wallet_not_found")
    );
    assert_eq!(reply.body["success"], false);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains(&unknown.to_string())
    );

    let reply = app
        .request(Method::GET, "/wallets/not-a-uuid", None, &[])
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::BAD_REQUEST, "invalid_wallet_id")
    );
}

#[tokio::test]
async fn bad_user_ids_and_bodies_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let long = "x".repeat(101);
    let cases = [
        (
            r#"{"user_id":""}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user_id",
        ),
        (
            r#"{"user_id":"   "}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user_id",
        ),
        (
            format!(r#"{{"user_id":"{long}"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user_id",
        ),
        (
            r#"{"user_id":"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            r#"{"name":"alice"}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            r#"{"user_id":42}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            format!(r#"{{"user_id":"{}"}}"#, "y".repeat(20_000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let reply = app
            .request(Method::POST, "/wallets", Some(&body), &[])
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "body {:.60}",
            body
        );
        assert_eq!(reply.body["success"], false);
    }
    let request = axum::http::Request::post("/wallets")
        .header("authorization", app.bearer(None, 0))
        .body(axum::body::Body::from(r#"{"user_id":"a"}"#))
        .unwrap();
    let reply = app.send(request).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    assert_eq!(app.row_counts().await, (0, 0, 0));
}

#[tokio::test]
async fn unknown_routes_methods_and_health() {
    let app = spawn_app().await;
    let reply = app.request(Method::GET, "/nope", None, &[]).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let reply = app.request(Method::DELETE, "/wallets", None, &[]).await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let reply = app.request(Method::GET, "/health", None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "OK");
}

#[tokio::test]
async fn nul_and_non_utf8_ids_are_refused_in_the_envelope() {
    let app = spawn_app().await;
    let reply = app
        .request(
            Method::POST,
            "/wallets",
            Some(r#"{"user_id":"a\u0000b"}"#),
            &[],
        )
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_user_id")
    );
    for (path, status, code) in [
        (
            "/users/a%00b/wallets",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user_id",
        ),
        (
            "/users/%FF%FE/wallets",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_user_id",
        ),
        (
            "/wallets/%FF%FE",
            StatusCode::BAD_REQUEST,
            "invalid_wallet_id",
        ),
    ] {
        let reply = app.request(Method::GET, path, None, &[]).await;
        assert_eq!((reply.status, reply.code()), (status, code), "GET {path}");
        assert_eq!(reply.body["success"], false, "GET {path}: {}", reply.body);
    }
    for path in ["/wallets/%C3%28/fund", "/wallets/%C3%28/transfer"] {
        let body = r#"{"amount":"1.00","to_wallet_id":"00000000-0000-0000-0000-000000000000"}"#;
        let reply = app.request(Method::POST, path, Some(body), &[]).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, "invalid_wallet_id"),
            "POST {path}"
        );
    }
    assert_eq!(app.row_counts().await, (0, 0, 0));
}

#[tokio::test]
async fn a_retried_create_with_its_key_opens_one_wallet() {
    let app = spawn_app().await;
    let create = |user: &'static str| {
        let app = app.clone();
        async move {
            app.request(
                Method::POST,
                "/wallets",
                Some(&format!(r#"{{"user_id":"{user}"}}"#)),
                &[("Idempotency-Key", "open-alice-1")],
            )
            .await
        }
    };
    let first = create("alice").await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let retry = create("alice").await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(retry.body, first.body);

    let other = create("bob").await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    // One wallet, its opening entry and its outbox row.
    assert_eq!(app.row_counts().await, (1, 1, 1));

    let bad_key = app
        .request(
            Method::POST,
            "/wallets",
            Some(r#"{"user_id":"carol"}"#),
            &[("Idempotency-Key", "has space")],
        )
        .await;
    assert_eq!(
        (bad_key.status, bad_key.code()),
        (StatusCode::BAD_REQUEST, "invalid_idempotency_key")
    );
    assert_eq!(app.row_counts().await, (1, 1, 1));
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_error_code() {
    let app = spawn_app().await;
    let reply = app.request(Method::GET, "/openapi.json", None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = &reply.body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for path in [
        "/wallets",
        "/wallets/{id}",
        "/users/{id}/wallets",
        "/wallets/{id}/fund",
        "/wallets/{id}/transfer",
        "/health",
        "/openapi.json",
        "/metrics",
    ] {
        assert!(paths.contains(&path), "{path} is not in {paths:?}");
    }
    let codes: Vec<&str> =
        doc["components"]["schemas"]["ErrorEnvelope"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
    assert_eq!(codes, wallet::error::ApiError::CODES);
    // The patterns are the parsers' own (whose tests generate strings
    // from them, as a fuzzer does, and parse every one).
    let schemas = &doc["components"]["schemas"];
    for schema in ["Fund", "Transfer"] {
        assert_eq!(
            schemas[schema]["properties"]["amount"]["pattern"],
            wallet_events::AMOUNT_PATTERN
        );
    }
    assert_eq!(
        schemas["CreateWallet"]["properties"]["user_id"]["pattern"],
        wallet_events::USER_ID_PATTERN
    );
    for (schema, field) in [("Wallet", "balance"), ("LedgerEntry", "balance_after")] {
        assert_eq!(
            schemas[schema]["properties"][field]["pattern"],
            wallet_events::schema::MONEY_PATTERN
        );
    }
    let user_param = &doc["paths"]["/users/{id}/wallets"]["get"]["parameters"][0];
    assert_eq!(
        user_param["schema"]["pattern"],
        wallet_events::USER_ID_PATTERN
    );
    let transfer = &doc["paths"]["/wallets/{id}/transfer"]["post"];
    let statuses: Vec<&str> = transfer["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        statuses,
        [
            "200", "400", "401", "403", "404", "413", "415", "422", "500", "503"
        ]
    );
    assert_eq!(transfer["security"], serde_json::json!([{"bearer": []}]));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["bearerFormat"],
        "JWT"
    );
    assert!(doc["paths"]["/health"]["get"]["security"].is_null());
    assert!(
        transfer["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
        "{transfer}"
    );
}
