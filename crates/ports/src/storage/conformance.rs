//! The storage conformance suite: what every adapter must do, checked the same way for all.
//!
//! An adapter's tests call [`storage_conformance!`](crate::storage_conformance) with a factory
//! that returns a fresh, empty store holding [`TABLES`]; every case becomes its own test.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    Condition, Cursor, IndexDef, Item, Key, Query, Storage, StorageError, TableDef, TxOp, Update,
    now_epoch_seconds,
};

/// Main test table: an index over `owner`/`created` and a TTL attribute.
pub const THINGS: TableDef = TableDef {
    name: "conformance_things",
    indexes: &[IndexDef {
        name: "by_owner",
        pk: "owner",
        sk: "created",
    }],
    ttl_attribute: Some("expires_at"),
};

/// A second table, for transactions across tables.
pub const LEDGER: TableDef = TableDef {
    name: "conformance_ledger",
    indexes: &[],
    ttl_attribute: None,
};

pub const TABLES: &[TableDef] = &[THINGS, LEDGER];

/// A store under test and whatever keeps it alive (a temporary directory, a table prefix).
pub struct Fixture {
    pub storage: Arc<dyn Storage>,
    pub guard: Box<dyn Any + Send>,
}

/// Generates one test per conformance case for the adapter that `$factory` builds:
/// `$factory(TABLES)` is an async expression returning a [`Fixture`].
#[macro_export]
macro_rules! storage_conformance {
    ($factory:path) => {
        $crate::storage_conformance!(@cases $factory;
            get_returns_what_put_stored,
            put_replaces_the_whole_item,
            put_conditions_decide_whether_it_writes,
            update_sets_adds_removes_and_returns_the_new_item,
            update_of_an_absent_item_creates_it,
            failed_conditions_change_nothing,
            delete_returns_the_previous_item_and_honours_its_condition,
            query_returns_one_partition_in_sort_order_filtered_by_prefix,
            query_pages_cover_every_item_exactly_once,
            cursors_from_other_queries_are_rejected,
            cursor_after_an_item_continues_right_after_it,
            index_query_follows_attribute_changes,
            index_pages_cover_every_item_exactly_once,
            transactions_are_all_or_nothing_and_name_the_failed_operation,
            transactions_reject_malformed_requests,
            expired_items_are_absent_everywhere,
            concurrent_conditional_decrements_never_go_below_zero,
            concurrent_creates_have_exactly_one_winner,
            concurrent_transfers_conserve_the_total,
            invalid_requests_are_rejected,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let fixture = $factory($crate::storage::conformance::TABLES).await;
                $crate::storage::conformance::$case(fixture.storage.as_ref()).await;
                drop(fixture);
            }
        )*
    };
}

fn item(value: Value) -> Item {
    match value {
        Value::Object(map) => map,
        other => panic!("test items are objects, not {other}"),
    }
}

fn sks(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["sk"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn put(storage: &dyn Storage, value: Value) {
    storage
        .put(THINGS.name, item(value), None)
        .await
        .expect("put");
}

/// Follows cursors to the end and returns every item, checking each page's size.
async fn drain(storage: &dyn Storage, index: Option<&'static str>, query: Query) -> Vec<Item> {
    let mut all = Vec::new();
    let mut query = query;
    for _ in 0..1000 {
        let page = match index {
            None => storage.query(THINGS.name, query.clone()).await,
            Some(index) => storage.query_index(THINGS.name, index, query.clone()).await,
        }
        .expect("query page");
        assert!(
            page.items.len() <= query.limit,
            "a page holds at most limit items"
        );
        all.extend(page.items);
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => return all,
        }
    }
    panic!("pagination did not end");
}

pub async fn get_returns_what_put_stored(storage: &dyn Storage) {
    let stored = json!({"pk": "p", "sk": "s", "name": "lamp", "n": 3, "tags": ["a", "b"],
                        "nested": {"x": true, "y": null}});
    put(storage, stored.clone()).await;
    let got = storage
        .get(THINGS.name, &Key::new("p", "s"))
        .await
        .expect("get");
    assert_eq!(got, Some(item(stored)));
    let missing = storage
        .get(THINGS.name, &Key::new("p", "other"))
        .await
        .expect("get");
    assert_eq!(missing, None);
}

pub async fn put_replaces_the_whole_item(storage: &dyn Storage) {
    put(storage, json!({"pk": "p", "sk": "s", "a": 1, "b": 2})).await;
    put(storage, json!({"pk": "p", "sk": "s", "c": 3})).await;
    let got = storage
        .get(THINGS.name, &Key::new("p", "s"))
        .await
        .expect("get");
    assert_eq!(got, Some(item(json!({"pk": "p", "sk": "s", "c": 3}))));
}

pub async fn put_conditions_decide_whether_it_writes(storage: &dyn Storage) {
    let key = Key::new("p", "s");
    let first = item(json!({"pk": "p", "sk": "s", "version": 1}));
    storage
        .put(THINGS.name, first.clone(), Some(Condition::NotExists))
        .await
        .expect("create when absent");
    let again = storage
        .put(THINGS.name, first.clone(), Some(Condition::NotExists))
        .await;
    assert!(
        matches!(again, Err(StorageError::ConditionFailed)),
        "{again:?}"
    );

    let stale = storage
        .put(
            THINGS.name,
            item(json!({"pk": "p", "sk": "s", "version": 3})),
            Some(Condition::equals("version", 2)),
        )
        .await;
    assert!(matches!(stale, Err(StorageError::ConditionFailed)));
    storage
        .put(
            THINGS.name,
            item(json!({"pk": "p", "sk": "s", "version": 2})),
            Some(Condition::Exists.and(Condition::equals("version", 1))),
        )
        .await
        .expect("matching version");
    let absent = storage
        .put(
            THINGS.name,
            item(json!({"pk": "p", "sk": "new"})),
            Some(Condition::Exists),
        )
        .await;
    assert!(matches!(absent, Err(StorageError::ConditionFailed)));
    assert_eq!(
        storage
            .get(THINGS.name, &key)
            .await
            .expect("get")
            .map(|i| i["version"].clone()),
        Some(json!(2))
    );
    assert_eq!(
        storage
            .get(THINGS.name, &Key::new("p", "new"))
            .await
            .expect("get"),
        None
    );
}

pub async fn update_sets_adds_removes_and_returns_the_new_item(storage: &dyn Storage) {
    put(
        storage,
        json!({"pk": "p", "sk": "s", "stock": 10, "old": "x", "name": "a"}),
    )
    .await;
    let after = storage
        .update(
            THINGS.name,
            &Key::new("p", "s"),
            Update::new()
                .set("name", "b")
                .add("stock", -3)
                .add("sold", 3)
                .remove("old"),
            Some(Condition::at_least("stock", 3)),
        )
        .await
        .expect("update");
    let expected = item(json!({"pk": "p", "sk": "s", "stock": 7, "sold": 3, "name": "b"}));
    assert_eq!(after, expected);
    assert_eq!(
        storage
            .get(THINGS.name, &Key::new("p", "s"))
            .await
            .expect("get"),
        Some(expected)
    );
}

pub async fn update_of_an_absent_item_creates_it(storage: &dyn Storage) {
    let created = storage
        .update(
            THINGS.name,
            &Key::new("p", "fresh"),
            Update::new().add("count", 1).set("label", "x"),
            None,
        )
        .await
        .expect("upsert");
    assert_eq!(
        created,
        item(json!({"pk": "p", "sk": "fresh", "count": 1, "label": "x"}))
    );
}

pub async fn failed_conditions_change_nothing(storage: &dyn Storage) {
    let original = json!({"pk": "p", "sk": "s", "stock": 2, "name": "a"});
    put(storage, original.clone()).await;
    let key = Key::new("p", "s");
    let update = storage
        .update(
            THINGS.name,
            &key,
            Update::new().add("stock", -3).set("name", "changed"),
            Some(Condition::at_least("stock", 3)),
        )
        .await;
    assert!(
        matches!(update, Err(StorageError::ConditionFailed)),
        "{update:?}"
    );
    let missing_attribute = storage
        .update(
            THINGS.name,
            &key,
            Update::new().add("reserved", -1),
            Some(Condition::at_least("reserved", 1)),
        )
        .await;
    assert!(matches!(
        missing_attribute,
        Err(StorageError::ConditionFailed)
    ));
    let delete = storage
        .delete(THINGS.name, &key, Some(Condition::equals("name", "b")))
        .await;
    assert!(matches!(delete, Err(StorageError::ConditionFailed)));
    assert_eq!(
        storage.get(THINGS.name, &key).await.expect("get"),
        Some(item(original))
    );
}

pub async fn delete_returns_the_previous_item_and_honours_its_condition(storage: &dyn Storage) {
    put(storage, json!({"pk": "p", "sk": "s", "v": 1})).await;
    let key = Key::new("p", "s");
    let previous = storage
        .delete(THINGS.name, &key, Some(Condition::equals("v", 1)))
        .await
        .expect("delete");
    assert_eq!(previous, Some(item(json!({"pk": "p", "sk": "s", "v": 1}))));
    assert_eq!(storage.get(THINGS.name, &key).await.expect("get"), None);
    let again = storage
        .delete(THINGS.name, &key, None)
        .await
        .expect("idempotent");
    assert_eq!(again, None);
    let must_exist = storage
        .delete(THINGS.name, &key, Some(Condition::Exists))
        .await;
    assert!(matches!(must_exist, Err(StorageError::ConditionFailed)));
}

pub async fn query_returns_one_partition_in_sort_order_filtered_by_prefix(storage: &dyn Storage) {
    for sk in ["order#3", "order#1", "line#1", "order#2", "orders", "order"] {
        put(storage, json!({"pk": "cust", "sk": sk})).await;
    }
    put(storage, json!({"pk": "cust2", "sk": "order#1"})).await;
    put(storage, json!({"pk": "cus", "sk": "order#1"})).await;

    let all = storage
        .query(THINGS.name, Query::partition("cust"))
        .await
        .expect("query");
    assert_eq!(
        sks(&all.items),
        ["line#1", "order", "order#1", "order#2", "order#3", "orders"]
    );
    assert_eq!(all.next, None);

    let orders = storage
        .query(THINGS.name, Query::partition("cust").prefix("order#"))
        .await
        .expect("query");
    assert_eq!(sks(&orders.items), ["order#1", "order#2", "order#3"]);

    let newest = storage
        .query(
            THINGS.name,
            Query::partition("cust")
                .prefix("order#")
                .descending()
                .limit(2),
        )
        .await
        .expect("query");
    assert_eq!(sks(&newest.items), ["order#3", "order#2"]);
    assert!(newest.next.is_some());

    let none = storage
        .query(THINGS.name, Query::partition("nobody"))
        .await
        .expect("query");
    assert!(none.items.is_empty());
    assert_eq!(none.next, None);
}

pub async fn query_pages_cover_every_item_exactly_once(storage: &dyn Storage) {
    let expected: Vec<String> = (0..23).map(|i| format!("e#{i:03}")).collect();
    for sk in &expected {
        put(storage, json!({"pk": "many", "sk": sk})).await;
    }
    put(storage, json!({"pk": "many", "sk": "f#000"})).await;
    for limit in [1, 5, 23, 100] {
        let query = Query::partition("many").prefix("e#").limit(limit);
        assert_eq!(
            sks(&drain(storage, None, query.clone()).await),
            expected,
            "limit {limit}"
        );
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(
            sks(&drain(storage, None, query.descending()).await),
            reversed,
            "descending, limit {limit}"
        );
    }
}

pub async fn cursors_from_other_queries_are_rejected(storage: &dyn Storage) {
    for i in 0..4 {
        put(
            storage,
            json!({"pk": "a", "sk": format!("x#{i}"), "owner": "o", "created": format!("{i}")}),
        )
        .await;
    }
    let page = storage
        .query(THINGS.name, Query::partition("a").limit(2))
        .await
        .expect("query");
    let cursor = page.next.expect("more pages");
    let other_partition = storage
        .query(
            THINGS.name,
            Query::partition("b").after(Some(cursor.clone())),
        )
        .await;
    assert!(matches!(other_partition, Err(StorageError::InvalidCursor)));
    let other_prefix = storage
        .query(
            THINGS.name,
            Query::partition("a")
                .prefix("y#")
                .after(Some(cursor.clone())),
        )
        .await;
    assert!(matches!(other_prefix, Err(StorageError::InvalidCursor)));
    let on_index = storage
        .query_index(
            THINGS.name,
            "by_owner",
            Query::partition("o").after(Some(cursor)),
        )
        .await;
    assert!(matches!(on_index, Err(StorageError::InvalidCursor)));
    for garbage in ["", "not base64 !", "eyJ4IjoxfQ", "AAAA"] {
        let result = storage
            .query(
                THINGS.name,
                Query::partition("a").after(Some(Cursor::from_token(garbage))),
            )
            .await;
        assert!(
            matches!(result, Err(StorageError::InvalidCursor)),
            "{garbage:?} gave {result:?}"
        );
    }
}

pub async fn cursor_after_an_item_continues_right_after_it(storage: &dyn Storage) {
    for i in 0..6 {
        put(
            storage,
            json!({"pk": "c", "sk": format!("k{i}"), "owner": "o", "created": format!("t{i}")}),
        )
        .await;
    }
    let all = storage
        .query(THINGS.name, Query::partition("c"))
        .await
        .expect("query");
    let third = &all.items[2];
    let cursor = Cursor::after(&THINGS, None, third).expect("cursor");
    let rest = storage
        .query(THINGS.name, Query::partition("c").after(Some(cursor)))
        .await
        .expect("query");
    assert_eq!(sks(&rest.items), ["k3", "k4", "k5"]);

    let in_index = Cursor::after(&THINGS, Some("by_owner"), third).expect("index cursor");
    let rest = storage
        .query_index(
            THINGS.name,
            "by_owner",
            Query::partition("o").after(Some(in_index)),
        )
        .await
        .expect("query index");
    assert_eq!(sks(&rest.items), ["k3", "k4", "k5"]);
}

pub async fn index_query_follows_attribute_changes(storage: &dyn Storage) {
    put(
        storage,
        json!({"pk": "i1", "sk": "x", "owner": "ann", "created": "2024-03"}),
    )
    .await;
    put(
        storage,
        json!({"pk": "i2", "sk": "x", "owner": "ann", "created": "2024-01"}),
    )
    .await;
    put(
        storage,
        json!({"pk": "i3", "sk": "x", "owner": "bob", "created": "2024-02"}),
    )
    .await;
    // No `created`: a sparse index leaves the item out.
    put(storage, json!({"pk": "i4", "sk": "x", "owner": "ann"})).await;

    let pks = |items: &[Item]| -> Vec<String> {
        items
            .iter()
            .map(|i| i["pk"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let ann = storage
        .query_index(THINGS.name, "by_owner", Query::partition("ann"))
        .await
        .expect("query index");
    assert_eq!(pks(&ann.items), ["i2", "i1"]);
    assert_eq!(
        ann.items[0]["created"], "2024-01",
        "index queries return whole items"
    );

    let newest_first = storage
        .query_index(
            THINGS.name,
            "by_owner",
            Query::partition("ann").descending(),
        )
        .await
        .expect("query index");
    assert_eq!(pks(&newest_first.items), ["i1", "i2"]);

    let prefixed = storage
        .query_index(
            THINGS.name,
            "by_owner",
            Query::partition("ann").prefix("2024-03"),
        )
        .await
        .expect("query index");
    assert_eq!(pks(&prefixed.items), ["i1"]);

    // Moving an item to another owner moves it in the index; removing the key attribute takes
    // it out; deleting it removes it.
    storage
        .update(
            THINGS.name,
            &Key::new("i3", "x"),
            Update::new().set("owner", "ann"),
            None,
        )
        .await
        .expect("move");
    storage
        .update(
            THINGS.name,
            &Key::new("i1", "x"),
            Update::new().remove("created"),
            None,
        )
        .await
        .expect("leave index");
    storage
        .delete(THINGS.name, &Key::new("i2", "x"), None)
        .await
        .expect("delete");
    storage
        .update(
            THINGS.name,
            &Key::new("i4", "x"),
            Update::new().set("created", "2024-09"),
            None,
        )
        .await
        .expect("join index");
    let ann = storage
        .query_index(THINGS.name, "by_owner", Query::partition("ann"))
        .await
        .expect("query index");
    assert_eq!(pks(&ann.items), ["i3", "i4"]);
    let bob = storage
        .query_index(THINGS.name, "by_owner", Query::partition("bob"))
        .await
        .expect("query index");
    assert!(bob.items.is_empty());
}

pub async fn index_pages_cover_every_item_exactly_once(storage: &dyn Storage) {
    // Several items share an index sort key, so the cursor must also carry the table key.
    let mut expected = Vec::new();
    for i in 0..17 {
        let pk = format!("item{i:02}");
        put(
            storage,
            json!({"pk": pk, "sk": "x", "owner": "many", "created": format!("day{}", i / 3)}),
        )
        .await;
        expected.push(pk);
    }
    for limit in [1, 4, 17, 50] {
        let items = drain(
            storage,
            Some("by_owner"),
            Query::partition("many").limit(limit),
        )
        .await;
        let mut got: Vec<String> = items
            .iter()
            .map(|i| i["pk"].as_str().unwrap_or_default().to_owned())
            .collect();
        let created: Vec<&str> = items
            .iter()
            .map(|i| i["created"].as_str().unwrap_or_default())
            .collect();
        let mut sorted = created.clone();
        sorted.sort();
        assert_eq!(created, sorted, "index sort order, limit {limit}");
        got.sort();
        assert_eq!(got, expected, "every item once, limit {limit}");

        let reversed = drain(
            storage,
            Some("by_owner"),
            Query::partition("many").limit(limit).descending(),
        )
        .await;
        assert_eq!(reversed.len(), expected.len(), "descending, limit {limit}");
        let unique: BTreeSet<&str> = reversed
            .iter()
            .map(|i| i["pk"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(unique.len(), expected.len(), "descending has no repeats");
    }
}

pub async fn transactions_are_all_or_nothing_and_name_the_failed_operation(storage: &dyn Storage) {
    put(
        storage,
        json!({"pk": "sku1", "sk": "stock", "available": 5}),
    )
    .await;
    put(
        storage,
        json!({"pk": "sku2", "sk": "stock", "available": 1}),
    )
    .await;

    let reserve = |second: i64| {
        vec![
            TxOp::Update {
                table: THINGS.name,
                key: Key::new("sku1", "stock"),
                update: Update::new().add("available", -2).add("reserved", 2),
                condition: Some(Condition::at_least("available", 2)),
            },
            TxOp::Update {
                table: THINGS.name,
                key: Key::new("sku2", "stock"),
                update: Update::new()
                    .add("available", -second)
                    .add("reserved", second),
                condition: Some(Condition::at_least("available", second)),
            },
            TxOp::Put {
                table: LEDGER.name,
                item: item(json!({"pk": "res1", "sk": "reservation"})),
                condition: Some(Condition::NotExists),
            },
        ]
    };

    let failed = storage.transact(reserve(2)).await;
    match failed {
        Err(StorageError::TransactionCanceled { failed }) => assert_eq!(failed, vec![1]),
        other => panic!("expected cancellation, got {other:?}"),
    }
    let stock = |pk: &'static str| async move {
        storage
            .get(THINGS.name, &Key::new(pk, "stock"))
            .await
            .expect("get")
            .expect("exists")
    };
    assert_eq!(stock("sku1").await["available"], 5, "first op rolled back");
    assert!(stock("sku1").await.get("reserved").is_none());
    assert_eq!(
        storage
            .get(LEDGER.name, &Key::new("res1", "reservation"))
            .await
            .expect("get"),
        None,
        "third op rolled back"
    );

    storage
        .transact(reserve(1))
        .await
        .expect("all conditions hold");
    assert_eq!(stock("sku1").await["available"], 3);
    assert_eq!(stock("sku2").await["reserved"], 1);
    assert!(
        storage
            .get(LEDGER.name, &Key::new("res1", "reservation"))
            .await
            .expect("get")
            .is_some()
    );

    // A check writes nothing but can cancel; a delete is part of the same unit.
    let result = storage
        .transact(vec![
            TxOp::Delete {
                table: THINGS.name,
                key: Key::new("sku1", "stock"),
                condition: None,
            },
            TxOp::Check {
                table: LEDGER.name,
                key: Key::new("res1", "reservation"),
                condition: Condition::NotExists,
            },
        ])
        .await;
    assert!(
        matches!(result, Err(StorageError::TransactionCanceled { ref failed }) if failed == &vec![1])
    );
    assert!(
        storage
            .get(THINGS.name, &Key::new("sku1", "stock"))
            .await
            .expect("get")
            .is_some()
    );
}

pub async fn transactions_reject_malformed_requests(storage: &dyn Storage) {
    let empty = storage.transact(Vec::new()).await;
    assert!(matches!(empty, Err(StorageError::Invalid(_))));
    let twice = storage
        .transact(vec![
            TxOp::Put {
                table: THINGS.name,
                item: item(json!({"pk": "a", "sk": "b"})),
                condition: None,
            },
            TxOp::Delete {
                table: THINGS.name,
                key: Key::new("a", "b"),
                condition: None,
            },
        ])
        .await;
    assert!(matches!(twice, Err(StorageError::Invalid(_))), "{twice:?}");
    assert_eq!(
        storage
            .get(THINGS.name, &Key::new("a", "b"))
            .await
            .expect("get"),
        None
    );
}

pub async fn expired_items_are_absent_everywhere(storage: &dyn Storage) {
    let now = now_epoch_seconds();
    put(storage, json!({"pk": "cart", "sk": "old", "owner": "o", "created": "1", "expires_at": now - 5, "n": 1})).await;
    put(storage, json!({"pk": "cart", "sk": "new", "owner": "o", "created": "2", "expires_at": now + 3600, "n": 1})).await;
    put(
        storage,
        json!({"pk": "cart", "sk": "forever", "owner": "o", "created": "3", "n": 1}),
    )
    .await;

    assert_eq!(
        storage
            .get(THINGS.name, &Key::new("cart", "old"))
            .await
            .expect("get"),
        None
    );
    assert!(
        storage
            .get(THINGS.name, &Key::new("cart", "new"))
            .await
            .expect("get")
            .is_some()
    );
    let listed = storage
        .query(THINGS.name, Query::partition("cart"))
        .await
        .expect("query");
    assert_eq!(sks(&listed.items), ["forever", "new"]);
    let indexed = storage
        .query_index(THINGS.name, "by_owner", Query::partition("o"))
        .await
        .expect("query index");
    assert_eq!(sks(&indexed.items), ["new", "forever"]);

    // Conditions see it as absent; an update starts from nothing.
    let exists = storage
        .update(
            THINGS.name,
            &Key::new("cart", "old"),
            Update::new().add("n", 1),
            Some(Condition::Exists),
        )
        .await;
    assert!(matches!(exists, Err(StorageError::ConditionFailed)));
    let fresh = storage
        .update(
            THINGS.name,
            &Key::new("cart", "old"),
            Update::new().add("n", 1),
            None,
        )
        .await
        .expect("update");
    assert_eq!(fresh, item(json!({"pk": "cart", "sk": "old", "n": 1})));
    storage
        .delete(THINGS.name, &Key::new("cart", "old"), None)
        .await
        .expect("delete");
    put(
        storage,
        json!({"pk": "cart", "sk": "old2", "expires_at": now - 1}),
    )
    .await;
    storage
        .put(
            THINGS.name,
            item(json!({"pk": "cart", "sk": "old2", "v": 2})),
            Some(Condition::NotExists),
        )
        .await
        .expect("an expired item does not block a create");
}

pub async fn concurrent_conditional_decrements_never_go_below_zero(storage: &dyn Storage) {
    let key = Key::new("hot", "stock");
    put(
        storage,
        json!({"pk": "hot", "sk": "stock", "available": 25, "sold": 0}),
    )
    .await;
    let attempts = 80;
    let results = futures::future::join_all((0..attempts).map(|_| {
        let key = key.clone();
        async move {
            storage
                .update(
                    THINGS.name,
                    &key,
                    Update::new().add("available", -1).add("sold", 1),
                    Some(Condition::at_least("available", 1)),
                )
                .await
        }
    }))
    .await;
    let succeeded = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(StorageError::ConditionFailed)))
        .count();
    assert_eq!(succeeded, 25);
    assert_eq!(
        refused,
        attempts - 25,
        "every other attempt is a clean refusal"
    );
    for result in results.iter().flatten() {
        assert!(result["available"].as_i64().unwrap_or(-1) >= 0);
    }
    let final_item = storage
        .get(THINGS.name, &key)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(final_item["available"], 0);
    assert_eq!(final_item["sold"], 25);
}

pub async fn concurrent_creates_have_exactly_one_winner(storage: &dyn Storage) {
    let results = futures::future::join_all((0..40).map(|i| async move {
        storage
            .put(
                THINGS.name,
                item(json!({"pk": "order", "sk": "key-1", "writer": i})),
                Some(Condition::NotExists),
            )
            .await
    }))
    .await;
    let winners: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let stored = storage
        .get(THINGS.name, &Key::new("order", "key-1"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored["writer"], winners[0]);
}

pub async fn concurrent_transfers_conserve_the_total(storage: &dyn Storage) {
    let accounts = ["a", "b", "c"];
    for account in accounts {
        storage
            .put(
                LEDGER.name,
                item(json!({"pk": account, "sk": "balance", "amount": 10})),
                None,
            )
            .await
            .expect("put");
    }
    let transfers = futures::future::join_all((0..60).map(|i| async move {
        let from = accounts[i % 3];
        let to = accounts[(i + 1) % 3];
        let amount = i64::try_from(i % 4 + 1).unwrap_or(1);
        storage
            .transact(vec![
                TxOp::Update {
                    table: LEDGER.name,
                    key: Key::new(from, "balance"),
                    update: Update::new().add("amount", -amount),
                    condition: Some(Condition::at_least("amount", amount)),
                },
                TxOp::Update {
                    table: LEDGER.name,
                    key: Key::new(to, "balance"),
                    update: Update::new().add("amount", amount),
                    condition: Some(Condition::Exists),
                },
            ])
            .await
    }))
    .await;
    for result in &transfers {
        assert!(
            matches!(
                result,
                Ok(()) | Err(StorageError::TransactionCanceled { .. })
            ),
            "{result:?}"
        );
    }
    let mut total = 0;
    for account in accounts {
        let balance = storage
            .get(LEDGER.name, &Key::new(account, "balance"))
            .await
            .expect("get")
            .expect("exists")["amount"]
            .as_i64()
            .expect("integer");
        assert!(balance >= 0, "{account} went negative");
        total += balance;
    }
    assert_eq!(total, 30);
}

pub async fn invalid_requests_are_rejected(storage: &dyn Storage) {
    let cases = [
        storage
            .put(THINGS.name, item(json!({"pk": "", "sk": "s"})), None)
            .await,
        storage
            .put(THINGS.name, item(json!({"pk": "p"})), None)
            .await,
        storage
            .put(THINGS.name, item(json!({"pk": 1, "sk": "s"})), None)
            .await,
        storage
            .put(
                THINGS.name,
                item(json!({"pk": "p", "sk": "s", "owner": 7, "created": "x"})),
                None,
            )
            .await,
        storage
            .put(
                THINGS.name,
                item(json!({"pk": "p", "sk": "s", "owner": "", "created": "x"})),
                None,
            )
            .await,
        storage
            .put(
                THINGS.name,
                item(json!({"pk": "p".repeat(3000), "sk": "s"})),
                None,
            )
            .await,
        storage
            .put(
                THINGS.name,
                item(json!({"pk": "p", "sk": "s", "blob": "x".repeat(410 * 1024)})),
                None,
            )
            .await,
    ];
    for (position, result) in cases.into_iter().enumerate() {
        assert!(
            matches!(result, Err(StorageError::Invalid(_))),
            "case {position}: {result:?}"
        );
    }
    let limit = storage
        .query(THINGS.name, Query::partition("p").limit(0))
        .await;
    assert!(matches!(limit, Err(StorageError::Invalid(_))));
    let too_many = storage
        .query(THINGS.name, Query::partition("p").limit(5000))
        .await;
    assert!(matches!(too_many, Err(StorageError::Invalid(_))));
    let no_index = storage
        .query_index(THINGS.name, "nope", Query::partition("p"))
        .await;
    assert!(matches!(no_index, Err(StorageError::Invalid(_))));
    put(storage, json!({"pk": "p", "sk": "s", "name": "text"})).await;
    let not_a_number = storage
        .update(
            THINGS.name,
            &Key::new("p", "s"),
            Update::new().add("name", 1),
            None,
        )
        .await;
    assert!(
        matches!(not_a_number, Err(StorageError::Invalid(_))),
        "{not_a_number:?}"
    );
    let key_change = storage
        .update(
            THINGS.name,
            &Key::new("p", "s"),
            Update::new().set("sk", "t"),
            None,
        )
        .await;
    assert!(matches!(key_change, Err(StorageError::Invalid(_))));
    assert_eq!(
        storage
            .get(THINGS.name, &Key::new("p", "s"))
            .await
            .expect("get"),
        Some(item(json!({"pk": "p", "sk": "s", "name": "text"})))
    );
}
