//! The inventory's HTTP API, spawned on port 0 over the embedded store.

use std::sync::Arc;
use std::time::Duration;

use emporium_api::events::{Envelope, EventType, OrderChanged, StockChanged};
use emporium_api::inventory::{Reservation, ReservationStatus, StockLevel, StockPage};
use emporium_inventory::startup::{self, InventoryConfig};
use emporium_platform::Problem;
use emporium_platform::testing::{self, Spawned, TestClient, expect_problem};
use emporium_ports::events::conformance::collect;
use emporium_ports::events::{Events, GroupDef};
use emporium_ports::storage::embedded::EmbeddedStorage;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "inventory-admin";

/// The key the shop's services show each other; the reservation routes want it.
const GATEWAY_KEY: &str = "inventory-test-gateway";

/// Listens to every stock event, as the search index will.
const STOCK_LISTENER: GroupDef = GroupDef {
    name: "test-stock",
    types: &[
        EventType::StockChanged.as_str(),
        EventType::StockSoldOut.as_str(),
        EventType::StockBackInStock.as_str(),
    ],
    visibility: Duration::from_secs(30),
    max_attempts: 5,
};

struct TestApp {
    url: String,
    /// The bus the inventory publishes to and consumes from.
    events: Arc<dyn Events>,
    /// Calls as the order service makes them, showing the shop's gateway key.
    client: TestClient,
    _server: Spawned,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Arc::new(
        EmbeddedStorage::open(
            &dir.path().join("inventory.redb"),
            emporium_inventory::TABLES,
        )
        .expect("storage"),
    );
    let config = InventoryConfig {
        http: testing::http_settings_with_gateway(GATEWAY_KEY),
        admin_key: ADMIN_KEY.into(),
        reservation_ttl_secs: 900,
        sweep_interval: Duration::from_millis(100),
    };
    let events: Arc<dyn emporium_ports::events::Events> = Arc::new(
        emporium_ports::events::stored::StoredEvents::embedded(
            &dir.path().join("events.redb"),
            &[emporium_inventory::GROUPS, &[STOCK_LISTENER]].concat(),
        )
        .expect("events"),
    );
    let inventory = startup::inventory(&config, storage.clone(), events.clone());
    let server =
        Spawned::new(startup::start(&config, inventory, storage, events.clone()).expect("start"));
    TestApp {
        url: server.url().to_owned(),
        events,
        client: TestClient::new(server.url())
            .with_gateway(GATEWAY_KEY)
            .with_admin_key(ADMIN_KEY),
        _server: server,
        _dir: dir,
    }
}

impl TestApp {
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, path)
    }

    fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.admin(method, path)
    }

    async fn set(&self, sku: &str, available: i64) -> StockLevel {
        let response = self
            .admin(Method::PUT, &format!("/v1/stock/{sku}"))
            .json(&json!({ "available": available }))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("stock")
    }

    async fn stock(&self, sku: &str) -> StockLevel {
        let response = self
            .request(Method::GET, &format!("/v1/stock/{sku}"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("stock")
    }

    async fn reservation(&self, id: &str) -> Reservation {
        self.request(Method::GET, &format!("/v1/reservations/{id}"))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("reservation")
    }

    async fn reserve(&self, id: &str, lines: Value) -> reqwest::Response {
        self.request(Method::POST, "/v1/reservations")
            .json(&json!({ "id": id, "lines": lines }))
            .send()
            .await
            .expect("send")
    }

    async fn act(&self, id: &str, action: &str) -> reqwest::Response {
        self.request(Method::POST, &format!("/v1/reservations/{id}/{action}"))
            .send()
            .await
            .expect("send")
    }
}

fn counts(level: &StockLevel) -> (i64, i64, i64) {
    (level.available, level.reserved, level.sold)
}

// === Stock ===

#[tokio::test]
async fn admins_set_and_adjust_stock_and_anyone_reads_it() {
    let app = spawn_app().await;
    let set = app.set("kit-001", 10).await;
    assert_eq!(set.sku, "KIT-001", "SKUs are normalised");
    assert_eq!(counts(&set), (10, 0, 0));
    assert_eq!(counts(&app.stock("KIT-001").await), (10, 0, 0));

    let added: StockLevel = app
        .admin(Method::POST, "/v1/stock/KIT-001/adjustments")
        .json(&json!({"delta": 5}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("stock");
    assert_eq!(added.available, 15);
    let removed: StockLevel = app
        .admin(Method::POST, "/v1/stock/KIT-001/adjustments")
        .json(&json!({"delta": -15}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("stock");
    assert_eq!(removed.available, 0);
    let below = app
        .admin(Method::POST, "/v1/stock/KIT-001/adjustments")
        .json(&json!({"delta": -1}))
        .send()
        .await
        .expect("send");
    let problem = expect_problem(below, 409, "insufficient_stock").await;
    assert_eq!(problem.extensions["available"], 0);
    assert_eq!(app.stock("KIT-001").await.available, 0);
}

#[tokio::test]
async fn stock_is_read_many_at_once_and_listed_in_pages() {
    let app = spawn_app().await;
    for i in 0..7 {
        app.set(&format!("SKU-{i}"), i).await;
    }
    let some: StockPage = app
        .request(Method::GET, "/v1/stock?skus=SKU-3,sku-1,NOPE,SKU-3")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("page");
    let skus: Vec<&str> = some.items.iter().map(|s| s.sku.as_str()).collect();
    assert_eq!(
        skus,
        ["SKU-3", "SKU-1"],
        "asked order, unknown left out, once each"
    );

    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/stock?limit=3&cursor={c}"),
            None => "/v1/stock?limit=3".to_owned(),
        };
        let page: StockPage = app
            .request(Method::GET, &path)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("page");
        listed.extend(page.items.into_iter().map(|s| s.sku));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        listed,
        (0..7).map(|i| format!("SKU-{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn bad_stock_requests_are_client_errors_and_change_nothing() {
    let app = spawn_app().await;
    app.set("KIT-1", 4).await;
    let cases: Vec<(RequestBuilder, u16, &str)> = vec![
        (
            app.request(Method::GET, "/v1/stock/NOPE"),
            404,
            "stock_not_found",
        ),
        (
            app.request(Method::GET, "/v1/stock/bad%20sku"),
            404,
            "stock_not_found",
        ),
        (
            app.request(Method::GET, "/v1/stock?skus="),
            400,
            "invalid_query",
        ),
        (
            app.request(Method::GET, "/v1/stock?skus=a%20b"),
            400,
            "invalid_query",
        ),
        (
            app.request(
                Method::GET,
                &format!(
                    "/v1/stock?skus={}",
                    (0..101)
                        .map(|i| format!("S{i}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
            400,
            "invalid_query",
        ),
        (
            app.request(Method::GET, "/v1/stock?limit=0"),
            400,
            "invalid_query",
        ),
        (
            app.request(Method::GET, "/v1/stock?cursor=junk"),
            400,
            "invalid_cursor",
        ),
        (
            app.request(Method::GET, "/v1/stock?skus=KIT-1&limit=3"),
            400,
            "invalid_query",
        ),
        (
            app.request(Method::PUT, "/v1/stock/KIT-1")
                .json(&json!({"available": 1})),
            401,
            "unauthorized",
        ),
        (
            app.request(Method::PUT, "/v1/stock/KIT-1")
                .bearer_auth("nope")
                .json(&json!({"available": 1})),
            401,
            "unauthorized",
        ),
        (
            app.admin(Method::PUT, "/v1/stock/KIT-1")
                .json(&json!({"available": -1})),
            422,
            "validation_failed",
        ),
        (
            app.admin(Method::PUT, "/v1/stock/KIT-1")
                .json(&json!({"available": 2_000_000_000i64})),
            422,
            "validation_failed",
        ),
        (
            app.admin(Method::PUT, "/v1/stock/KIT-1")
                .json(&json!({"available": "many"})),
            400,
            "invalid_body",
        ),
        (
            app.admin(Method::PUT, "/v1/stock/KIT-1")
                .json(&json!({"available": 1, "x": 1})),
            400,
            "invalid_body",
        ),
        (
            app.admin(Method::PUT, "/v1/stock/bad%20sku")
                .json(&json!({"available": 1})),
            422,
            "validation_failed",
        ),
        (
            app.admin(Method::POST, "/v1/stock/KIT-1/adjustments")
                .json(&json!({"delta": 0})),
            422,
            "validation_failed",
        ),
        // The ends of i64, whose absolute value overflowed the check once.
        (
            app.admin(Method::POST, "/v1/stock/KIT-1/adjustments")
                .json(&json!({"delta": i64::MIN})),
            422,
            "validation_failed",
        ),
        (
            app.admin(Method::POST, "/v1/stock/KIT-1/adjustments")
                .json(&json!({"delta": i64::MAX})),
            422,
            "validation_failed",
        ),
        (
            app.admin(Method::POST, "/v1/stock/NOPE/adjustments")
                .json(&json!({"delta": 1})),
            404,
            "stock_not_found",
        ),
        (
            app.request(Method::POST, "/v1/stock/KIT-1/adjustments")
                .json(&json!({"delta": 1})),
            401,
            "unauthorized",
        ),
    ];
    for (request, status, code) in cases {
        expect_problem(request.send().await.expect("send"), status, code).await;
    }
    assert_eq!(counts(&app.stock("KIT-1").await), (4, 0, 0));
}

// === Reservations ===

#[tokio::test]
async fn reservations_are_all_or_nothing_and_name_what_is_short() {
    let app = spawn_app().await;
    app.set("A", 5).await;
    app.set("B", 1).await;
    let short = app
        .reserve("r1", json!([{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 3}, {"sku": "C", "quantity": 1}]))
        .await;
    let problem = expect_problem(short, 409, "out_of_stock").await;
    let shortages = problem.extensions["short"].as_array().expect("short");
    let named: Vec<(&str, i64)> = shortages
        .iter()
        .map(|s| {
            (
                s["sku"].as_str().unwrap_or_default(),
                s["available"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(named, [("B", 1), ("C", 0)]);
    assert!(problem.detail.unwrap_or_default().contains("B, C"));
    assert_eq!(
        counts(&app.stock("A").await),
        (5, 0, 0),
        "nothing of A was taken"
    );
    let missing = app
        .request(Method::GET, "/v1/reservations/r1")
        .send()
        .await
        .expect("send");
    expect_problem(missing, 404, "reservation_not_found").await;

    let held = app
        .reserve(
            "r1",
            json!([{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}]),
        )
        .await;
    assert_eq!(held.status(), StatusCode::CREATED);
    let held: Reservation = held.json().await.expect("reservation");
    assert_eq!(held.status, ReservationStatus::Held);
    assert_eq!(counts(&app.stock("A").await), (3, 2, 0));
    assert_eq!(counts(&app.stock("B").await), (0, 1, 0));
}

#[tokio::test]
async fn reserving_again_with_the_same_id_is_idempotent() {
    let app = spawn_app().await;
    app.set("A", 5).await;
    let lines = json!([{"sku": "A", "quantity": 2}]);
    let first: Reservation = app
        .reserve("r1", lines.clone())
        .await
        .json()
        .await
        .expect("first");
    let again = app
        .reserve("r1", json!([{"sku": "a", "quantity": 2}]))
        .await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "a repeat is not a new reservation"
    );
    let again: Reservation = again.json().await.expect("again");
    assert_eq!(again, first);
    assert_eq!(counts(&app.stock("A").await), (3, 2, 0), "held once");
    let other = app
        .reserve("r1", json!([{"sku": "A", "quantity": 3}]))
        .await;
    expect_problem(other, 409, "reservation_conflict").await;
    assert_eq!(counts(&app.stock("A").await), (3, 2, 0));
}

#[tokio::test]
async fn commit_release_and_return_move_units_and_repeat_safely() {
    let app = spawn_app().await;
    app.set("A", 10).await;
    app.reserve("sold", json!([{"sku": "A", "quantity": 3}]))
        .await;
    app.reserve("dropped", json!([{"sku": "A", "quantity": 2}]))
        .await;
    assert_eq!(counts(&app.stock("A").await), (5, 5, 0));

    for _ in 0..2 {
        let committed: Reservation = app
            .act("sold", "commit")
            .await
            .json()
            .await
            .expect("commit");
        assert_eq!(committed.status, ReservationStatus::Committed);
    }
    assert_eq!(counts(&app.stock("A").await), (5, 2, 3));
    for _ in 0..2 {
        let released: Reservation = app
            .act("dropped", "release")
            .await
            .json()
            .await
            .expect("release");
        assert_eq!(released.status, ReservationStatus::Released);
        assert_eq!(released.release_reason.as_deref(), Some("released"));
    }
    assert_eq!(counts(&app.stock("A").await), (7, 0, 3));

    expect_problem(
        app.act("sold", "release").await,
        409,
        "reservation_committed",
    )
    .await;
    expect_problem(
        app.act("dropped", "commit").await,
        409,
        "reservation_released",
    )
    .await;
    expect_problem(
        app.act("dropped", "return").await,
        409,
        "reservation_not_committed",
    )
    .await;
    for _ in 0..2 {
        let returned: Reservation = app
            .act("sold", "return")
            .await
            .json()
            .await
            .expect("return");
        assert_eq!(returned.status, ReservationStatus::Returned);
    }
    assert_eq!(counts(&app.stock("A").await), (10, 0, 0));
    expect_problem(
        app.act("nope", "commit").await,
        404,
        "reservation_not_found",
    )
    .await;
    expect_problem(
        app.act("bad%20id", "commit").await,
        404,
        "reservation_not_found",
    )
    .await;
}

/// A caller that gives up on a slow reservation releases it at once; on a slow network that
/// release can arrive before the reservation. The late reservation must then hold nothing.
#[tokio::test]
async fn a_release_that_overtakes_its_reservation_fences_the_id() {
    let app = spawn_app().await;
    app.set("A", 10).await;
    for _ in 0..2 {
        let fenced = app.act("late", "release").await;
        assert_eq!(fenced.status(), StatusCode::OK);
        let fenced: Reservation = fenced.json().await.expect("fence");
        assert_eq!(fenced.status, ReservationStatus::Released);
        assert!(fenced.lines.is_empty(), "{fenced:?}");
    }
    let late = app
        .reserve("late", json!([{"sku": "A", "quantity": 4}]))
        .await;
    expect_problem(late, 409, "reservation_released").await;
    assert_eq!(counts(&app.stock("A").await), (10, 0, 0), "nothing held");
    expect_problem(app.act("late", "commit").await, 409, "reservation_released").await;
    // An id that is not one is still unknown, and fences nothing.
    expect_problem(
        app.act("bad%20id", "release").await,
        404,
        "reservation_not_found",
    )
    .await;

    // Raced: whichever lands first, the stock ends where it started.
    for round in 0..20 {
        let id = format!("race-{round}");
        let lines = json!([{"sku": "A", "quantity": 1}]);
        let (reserved, released) = tokio::join!(app.reserve(&id, lines), app.act(&id, "release"));
        assert!(
            [201, 409].contains(&reserved.status().as_u16()),
            "{}",
            reserved.status()
        );
        assert_eq!(released.status(), StatusCode::OK);
        // A reservation that won the race was released by the release that came after it.
        let level = app.stock("A").await;
        assert_eq!(counts(&level), (10, 0, 0), "round {round}");
    }
}

#[tokio::test]
async fn bad_reservations_are_refused_and_hold_nothing() {
    let app = spawn_app().await;
    app.set("A", 5).await;
    let cases = [
        json!({"id": "r", "lines": []}),
        json!({"id": "r", "lines": [{"sku": "A", "quantity": 0}]}),
        json!({"id": "r", "lines": [{"sku": "A", "quantity": -1}]}),
        json!({"id": "r", "lines": [{"sku": "A", "quantity": 1001}]}),
        json!({"id": "r", "lines": [{"sku": "A", "quantity": 1}, {"sku": "a", "quantity": 1}]}),
        json!({"id": "has space", "lines": [{"sku": "A", "quantity": 1}]}),
        json!({"id": "r", "lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": 0}),
        json!({"id": "r", "lines": [{"sku": "A", "quantity": 1}], "ttl_seconds": 100000}),
    ];
    for body in cases {
        let response = app
            .request(Method::POST, "/v1/reservations")
            .json(&body)
            .send()
            .await
            .expect("send");
        expect_problem(response, 422, "validation_failed").await;
    }
    for (body, code) in [
        (
            json!({"id": "r", "lines": [{"sku": "A", "quantity": "1"}]}),
            "invalid_body",
        ),
        (json!({"id": "r"}), "invalid_body"),
        (
            json!({"id": "r", "lines": [{"sku": "A", "quantity": 1, "price": 3}]}),
            "invalid_body",
        ),
    ] {
        let response = app
            .request(Method::POST, "/v1/reservations")
            .json(&body)
            .send()
            .await
            .expect("send");
        expect_problem(response, 400, code).await;
    }
    assert_eq!(counts(&app.stock("A").await), (5, 0, 0));
}

#[tokio::test]
async fn expired_reservations_return_their_stock_by_themselves() {
    let app = spawn_app().await;
    app.set("A", 4).await;
    let response = app
        .request(Method::POST, "/v1/reservations")
        .json(
            &json!({"id": "short-lived", "lines": [{"sku": "A", "quantity": 3}], "ttl_seconds": 1}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(counts(&app.stock("A").await), (1, 3, 0));
    let mut returned = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if counts(&app.stock("A").await) == (4, 0, 0) {
            returned = true;
            break;
        }
    }
    assert!(returned, "the sweeper returned the stock");
    let reservation: Reservation = app.reservation("short-lived").await;
    assert_eq!(reservation.status, ReservationStatus::Released);
    assert_eq!(reservation.release_reason.as_deref(), Some("expired"));
    expect_problem(
        app.act("short-lived", "commit").await,
        409,
        "reservation_expired",
    )
    .await;
    assert_eq!(counts(&app.stock("A").await), (4, 0, 0));
}

// === Races ===

#[tokio::test]
async fn sixty_concurrent_reservations_for_ten_units_get_exactly_ten() {
    let app = spawn_app().await;
    app.set("HOT", 10).await;
    let attempts = futures::future::join_all((0..60).map(|i| {
        let app = &app;
        async move {
            app.reserve(&format!("race-{i}"), json!([{"sku": "HOT", "quantity": 1}]))
                .await
        }
    }))
    .await;
    let created = attempts
        .iter()
        .filter(|r| r.status() == StatusCode::CREATED)
        .count();
    let refused = attempts
        .iter()
        .filter(|r| r.status() == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, refused), (10, 50));
    assert_eq!(counts(&app.stock("HOT").await), (0, 10, 0));
}

#[tokio::test]
async fn concurrent_commit_and_release_of_one_reservation_pick_one_outcome() {
    let app = spawn_app().await;
    for round in 0..10 {
        let sku = format!("R{round}");
        app.set(&sku, 2).await;
        let id = format!("res-{round}");
        app.reserve(&id, json!([{"sku": sku, "quantity": 2}])).await;
        let (commit, release) = tokio::join!(app.act(&id, "commit"), app.act(&id, "release"));
        let winners = [commit.status(), release.status()]
            .iter()
            .filter(|s| **s == StatusCode::OK)
            .count();
        assert_eq!(winners, 1, "round {round}");
        let level = app.stock(&sku).await;
        assert!(
            counts(&level) == (0, 0, 2) || counts(&level) == (2, 0, 0),
            "{level:?}"
        );
    }
}

#[tokio::test]
async fn units_are_conserved_under_concurrent_mixed_traffic() {
    let app = spawn_app().await;
    let skus = ["X", "Y", "Z"];
    for sku in skus {
        app.set(sku, 20).await;
    }
    let work = (0..90).map(|i| {
        let app = &app;
        async move {
            let id = format!("mix-{i}");
            let lines = json!([
                {"sku": skus[i % 3], "quantity": 1 + (i % 4) as i64},
                {"sku": skus[(i + 1) % 3], "quantity": 1},
            ]);
            let ttl = if i % 7 == 0 { 1 } else { 600 };
            let reserved = app
                .request(Method::POST, "/v1/reservations")
                .json(&json!({"id": id, "lines": lines, "ttl_seconds": ttl}))
                .send()
                .await
                .expect("send");
            if reserved.status() != StatusCode::CREATED {
                return;
            }
            match i % 3 {
                0 => {
                    app.act(&id, "commit").await;
                }
                1 => {
                    app.act(&id, "release").await;
                }
                _ => {
                    if app.act(&id, "commit").await.status() == StatusCode::OK {
                        app.act(&id, "return").await;
                    }
                }
            }
        }
    });
    futures::future::join_all(work).await;
    // Let the sweeper return whatever expired.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for sku in skus {
        let level = app.stock(sku).await;
        assert!(
            level.available >= 0 && level.reserved >= 0 && level.sold >= 0,
            "{level:?}"
        );
        assert_eq!(
            level.available + level.reserved + level.sold,
            20,
            "{level:?}"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let document: Value = app
        .request(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let paths = document["paths"].as_object().expect("paths");
    for path in [
        "/v1/stock",
        "/v1/stock/{sku}",
        "/v1/stock/{sku}/adjustments",
        "/v1/reservations",
        "/v1/reservations/{id}",
        "/v1/reservations/{id}/commit",
        "/v1/reservations/{id}/release",
        "/v1/reservations/{id}/return",
    ] {
        assert!(paths.contains_key(path), "{path}");
    }
    let ready: Value = app
        .request(Method::GET, "/readyz")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "ready");
}

#[tokio::test]
async fn reservations_are_for_the_shops_services_only_and_a_stranger_holds_nothing() {
    let app = spawn_app().await;
    app.set("KIT-001", 5).await;
    let id = emporium_platform::id::new_id();
    let stranger = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", app.url);
    let body =
        json!({"id": id, "lines": [{"sku": "KIT-001", "quantity": 5}], "ttl_seconds": 86400});
    for shown in [None, Some("a guess")] {
        let with = |request: RequestBuilder| match shown {
            Some(key) => request.header(emporium_platform::auth::GATEWAY_HEADER, key),
            None => request,
        };
        let attempts = [
            with(stranger.post(url("/v1/reservations"))).json(&body),
            with(stranger.get(url(&format!("/v1/reservations/{id}")))),
            with(stranger.post(url(&format!("/v1/reservations/{id}/commit")))),
            with(stranger.post(url(&format!("/v1/reservations/{id}/release")))),
            with(stranger.post(url(&format!("/v1/reservations/{id}/return")))),
        ];
        for attempt in attempts {
            let response = attempt.send().await.expect("send");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            let problem: Problem = response.json().await.expect("problem");
            assert_eq!(problem.code.as_str(), "gateway_required");
        }
    }
    // Nothing was held, and no fence was written: the shop's own reservation goes through.
    let level: StockLevel = stranger
        .get(url("/v1/stock/KIT-001"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("stock");
    assert_eq!(
        (level.available, level.reserved),
        (5, 0),
        "stock reads stay open"
    );
    let held = app
        .request(Method::POST, "/v1/reservations")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(held.status(), StatusCode::CREATED);
}

/// The stock events of `sku` among what the listener received within `within`, waiting for
/// `count` of them.
async fn stock_events(app: &TestApp, sku: &str, count: usize) -> Vec<Envelope> {
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    while seen.len() < count && started.elapsed() < Duration::from_secs(10) {
        for delivery in collect(
            app.events.as_ref(),
            STOCK_LISTENER.name,
            1,
            Duration::from_secs(1),
            true,
        )
        .await
        {
            let envelope = Envelope::from_json(delivery.event.body.as_bytes()).expect("envelope");
            if envelope.subject == sku {
                seen.push(envelope);
            }
        }
    }
    seen
}

fn kinds(envelopes: &[Envelope], kind: EventType) -> Vec<StockChanged> {
    envelopes
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| {
            e.decode(&[
                EventType::StockChanged,
                EventType::StockSoldOut,
                EventType::StockBackInStock,
            ])
            .expect("stock data")
        })
        .collect()
}

#[tokio::test]
async fn every_change_of_a_sku_tells_its_counters_and_when_it_sells_out_or_comes_back() {
    let app = spawn_app().await;
    // A transition is told when the relay sees it: each step waits for its event, as a
    // shopper's pace would give the relay time to look.
    let mut seen = Vec::new();
    let step = async |seen: &mut Vec<Envelope>, kind: EventType| {
        for _ in 0..20 {
            let got = stock_events(&app, "EVT-001", 1).await;
            let found = got.iter().any(|e| e.kind == kind);
            seen.extend(got);
            if found {
                return;
            }
        }
        panic!("no {kind} among {seen:?}");
    };
    app.set("EVT-001", 2).await;
    step(&mut seen, EventType::StockChanged).await;
    let held = app
        .reserve("r-evt-1", json!([{"sku": "EVT-001", "quantity": 2}]))
        .await;
    assert_eq!(held.status(), 201);
    step(&mut seen, EventType::StockSoldOut).await;
    assert_eq!(app.act("r-evt-1", "release").await.status(), 200);
    step(&mut seen, EventType::StockBackInStock).await;
    let held = app
        .reserve("r-evt-2", json!([{"sku": "EVT-001", "quantity": 1}]))
        .await;
    assert_eq!(held.status(), 201);
    assert_eq!(app.act("r-evt-2", "commit").await.status(), 200);
    let now = app.stock("EVT-001").await;
    assert_eq!((now.available, now.reserved, now.sold), (1, 0, 1));
    while kinds(&seen, EventType::StockChanged).len() < 5 {
        let got = stock_events(&app, "EVT-001", 1).await;
        assert!(!got.is_empty(), "{seen:?}");
        seen.extend(got);
    }

    // Five changes of its counters (set, reserve, release, reserve, commit), one sold-out (the
    // first reservation took all), one back-in-stock (its release).
    let changed = kinds(&seen, EventType::StockChanged);
    assert_eq!(changed.len(), 5, "{seen:?}");
    // The newest event carries the counters as they are.
    let newest = changed.iter().max_by_key(|c| c.version).expect("newest");
    assert_eq!(
        (newest.available, newest.reserved, newest.sold),
        (now.available, now.reserved, now.sold)
    );
    let sold_out = kinds(&seen, EventType::StockSoldOut);
    assert_eq!(sold_out.len(), 1, "{seen:?}");
    assert_eq!(sold_out[0].available, 0);
    let back = kinds(&seen, EventType::StockBackInStock);
    assert_eq!(back.len(), 1, "{seen:?}");
    assert!(back[0].available > 0);
    for envelope in &seen {
        assert_eq!(envelope.source, "/emporium/inventory");
        assert_eq!(envelope.subject, "EVT-001");
    }
    // Nothing more: no transition was told twice.
    assert!(stock_events(&app, "EVT-001", 1).await.is_empty());
}

/// An order event, as the order service publishes it.
fn order_event(
    kind: EventType,
    order_id: &str,
    sku: &str,
    quantity: i64,
) -> emporium_ports::events::Event {
    let data: OrderChanged = serde_json::from_value(json!({
        "order_id": order_id,
        "customer_id": "01j0000000000000000000000b",
        "cart_id": "01j0000000000000000000000c",
        "status": if kind == EventType::OrderConfirmed { "confirmed" } else { "cancelled" },
        "lines": [{
            "product_id": "01j0000000000000000000000d", "sku": sku, "name": "Thing",
            "unit_price": {"amount": 100, "currency": "USD"}, "quantity": quantity,
            "line_total": {"amount": 100 * quantity, "currency": "USD"}
        }],
        "totals": {
            "subtotal": {"amount": 100, "currency": "USD"}, "shipping": {"amount": 0, "currency": "USD"},
            "tax": {"amount": 0, "currency": "USD"}, "total": {"amount": 100, "currency": "USD"}
        },
        "version": if kind == EventType::OrderConfirmed { 2 } else { 3 }
    }))
    .expect("order data");
    Envelope::new("order", kind, &data, None)
        .expect("envelope")
        .to_event()
}

async fn stock_becomes(app: &TestApp, sku: &str, expected: (i64, i64, i64)) {
    let mut seen = app.stock(sku).await;
    for _ in 0..400 {
        if (seen.available, seen.reserved, seen.sold) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        seen = app.stock(sku).await;
    }
    panic!("{sku} stayed {seen:?}, expected {expected:?}");
}

#[tokio::test]
async fn an_order_confirmed_sells_its_hold_once_and_cancelled_gives_it_back_in_either_order() {
    let app = spawn_app().await;
    app.set("EVT-002", 10).await;

    // Confirmed, published twice (a relay's duplicate) and once more under another id (the
    // same change told again): sold once.
    assert_eq!(
        app.reserve("o-evt-1", json!([{"sku": "EVT-002", "quantity": 3}]))
            .await
            .status(),
        201
    );
    let confirmed = order_event(EventType::OrderConfirmed, "o-evt-1", "EVT-002", 3);
    for _ in 0..2 {
        app.events
            .publish(std::slice::from_ref(&confirmed))
            .await
            .expect("publish");
    }
    app.events
        .publish(&[order_event(
            EventType::OrderConfirmed,
            "o-evt-1",
            "EVT-002",
            3,
        )])
        .await
        .expect("publish");
    stock_becomes(&app, "EVT-002", (7, 0, 3)).await;
    // Then cancelled: returned, once.
    let cancelled = order_event(EventType::OrderCancelled, "o-evt-1", "EVT-002", 3);
    for _ in 0..2 {
        app.events
            .publish(std::slice::from_ref(&cancelled))
            .await
            .expect("publish");
    }
    stock_becomes(&app, "EVT-002", (10, 0, 0)).await;
    let reservation: Reservation = app.reservation("o-evt-1").await;
    assert_eq!(reservation.status, ReservationStatus::Returned);

    // Cancelled overtaking its confirmation: the hold is released, and the late confirmation
    // sells nothing.
    assert_eq!(
        app.reserve("o-evt-2", json!([{"sku": "EVT-002", "quantity": 2}]))
            .await
            .status(),
        201
    );
    app.events
        .publish(&[order_event(
            EventType::OrderCancelled,
            "o-evt-2",
            "EVT-002",
            2,
        )])
        .await
        .expect("publish");
    stock_becomes(&app, "EVT-002", (10, 0, 0)).await;
    app.events
        .publish(&[order_event(
            EventType::OrderConfirmed,
            "o-evt-2",
            "EVT-002",
            2,
        )])
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stock_becomes(&app, "EVT-002", (10, 0, 0)).await;

    // Its metrics say what it did.
    let metrics = app
        .request(Method::GET, "/metrics")
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("metrics");
    for series in [
        "emporium_inventory_events_handled_total{group=\"inventory-orders\",outcome=\"applied\"} 3",
        "emporium_inventory_events_handled_total{group=\"inventory-orders\",outcome=\"skipped\"}",
        "emporium_inventory_events_lag_seconds_count{group=\"inventory-orders\"}",
        "emporium_inventory_events_published_total{type=\"emporium.stock.changed.v1\"}",
        "emporium_inventory_outbox_backlog",
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
}

/// A reservation whose hold ran out before its order's events were applied.
async fn expired_hold(app: &TestApp, id: &str, sku: &str) {
    let held = app
        .request(Method::POST, "/v1/reservations")
        .json(&json!({"id": id, "lines": [{"sku": sku, "quantity": 2}], "ttl_seconds": 1}))
        .send()
        .await
        .expect("send");
    assert_eq!(held.status(), 201);
    for _ in 0..100 {
        let reservation = app.reservation(id).await;
        if reservation.status == ReservationStatus::Released {
            assert_eq!(reservation.release_reason.as_deref(), Some("expired"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the hold of {id} did not expire");
}

#[tokio::test]
async fn a_paid_order_whose_hold_expired_is_sold_from_stock_unless_it_was_cancelled_first() {
    let app = spawn_app().await;
    app.set("EVT-003", 10).await;

    // Confirmed after its hold expired: sold from what is available.
    expired_hold(&app, "o-late-1", "EVT-003").await;
    app.events
        .publish(&[order_event(
            EventType::OrderConfirmed,
            "o-late-1",
            "EVT-003",
            2,
        )])
        .await
        .expect("publish");
    stock_becomes(&app, "EVT-003", (8, 0, 2)).await;
    assert_eq!(
        app.reservation("o-late-1").await.status,
        ReservationStatus::Committed
    );

    // Cancelled first, then its confirmation (a redelivery, a redrive): never sold.
    expired_hold(&app, "o-late-2", "EVT-003").await;
    app.events
        .publish(&[order_event(
            EventType::OrderCancelled,
            "o-late-2",
            "EVT-003",
            2,
        )])
        .await
        .expect("publish");
    for _ in 0..100 {
        if app.reservation("o-late-2").await.release_reason.as_deref() == Some("cancelled") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.reservation("o-late-2").await.release_reason.as_deref(),
        Some("cancelled")
    );
    app.events
        .publish(&[order_event(
            EventType::OrderConfirmed,
            "o-late-2",
            "EVT-003",
            2,
        )])
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stock_becomes(&app, "EVT-003", (8, 0, 2)).await;
    assert_eq!(
        app.reservation("o-late-2").await.status,
        ReservationStatus::Released
    );
}
