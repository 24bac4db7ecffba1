//! The embedded storage adapter: one redb file, crash-safe and correct under concurrent writers.
//!
//! Writes go to a single writer thread that takes whatever writes are waiting (up to
//! [`MAX_BATCH`]), applies them one after another inside one redb write transaction and commits
//! once, durably, before answering any of them. Each write sees the effects of those before it,
//! so the outcome is exactly that of running them one at a time, but the fsync is shared:
//! group commit, as databases do, because one fsync per write would cap the whole shop at a few
//! hundred writes a second. A write that fails its condition changes nothing and the batch goes
//! on; an I/O failure aborts the whole batch and every write in it reports the failure.
//!
//! Reads run in their own read transactions (MVCC snapshots), so they never wait for the writer
//! and see only committed data. A point read runs on the caller's thread: it walks a few pages
//! that are in memory, microseconds of work, and handing it to a thread pool cost two thread
//! switches, which under load each waited for a core (docs/BENCHMARKS.md). Queries, which can
//! walk many pages, run on the blocking pool.
//!
//! Layout: a redb table `t:<name>` maps `(pk, sk)` to the item as JSON, and each secondary index
//! has a table `i:<name>:<index>` whose keys are `(index pk, index sk, pk, sk)`, maintained in
//! the same transaction as the item. Expired items are invisible at once and deleted by a
//! periodic sweep in the writer, as DynamoDB's TTL deletes them late.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use tokio::sync::oneshot;

use super::{
    Condition, Cursor, Item, Key, Page, Position, Query, Result, Storage, StorageError, TableDef,
    TxOp, Update, now_epoch_seconds, validate_transaction,
};

/// Most writes committed together.
const MAX_BATCH: usize = 256;

/// redb's page cache per file. Its default, 1 GiB, fills as the store grows under load: with a
/// file per service, `emporium up` grew by 1 MB of RSS for each 1.3 MB written. Pages beyond
/// this are read through the operating system's file cache, which the kernel can reclaim.
const PAGE_CACHE_BYTES: usize = 4 * 1024 * 1024;
/// How often the writer deletes expired items.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Most expired items one sweep deletes, so a sweep never stalls writes for long.
const SWEEP_LIMIT: usize = 5_000;

type MainKey = (&'static str, &'static str);
type IndexKey = (&'static str, &'static str, &'static str, &'static str);

fn main_table(name: &str) -> TableDefinition<'_, MainKey, &'static [u8]> {
    TableDefinition::new(name)
}

fn index_table(name: &str) -> TableDefinition<'_, IndexKey, ()> {
    TableDefinition::new(name)
}

/// A declared table with the names of its redb tables.
#[derive(Debug)]
struct TableInfo {
    def: TableDef,
    main: String,
    /// redb table name of each of `def.indexes`, in the same order.
    indexes: Vec<String>,
}

type Tables = HashMap<&'static str, TableInfo>;

/// Storage in a single redb file.
#[derive(Clone)]
pub struct EmbeddedStorage {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    tables: Arc<Tables>,
    /// The runtime whose blocking pool runs queries: the one the store was opened on. Every
    /// actix worker is a runtime of its own with a blocking pool of up to 512 threads, and
    /// reads spread over all of them had `emporium up` at 95 threads and 28 MB more RSS
    /// under load; the opening runtime's pool is one, and bounded.
    readers: Option<tokio::runtime::Handle>,
    writer: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer after its current batch; joining it releases the
        // file, so the same path can be opened again straight away.
        self.writer.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for EmbeddedStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStorage")
            .field("tables", &self.inner.tables.keys().collect::<Vec<_>>())
            .finish()
    }
}

enum WriteOp {
    Put {
        table: &'static str,
        item: Item,
        condition: Option<Condition>,
    },
    Update {
        table: &'static str,
        key: Key,
        update: Update,
        condition: Option<Condition>,
    },
    Delete {
        table: &'static str,
        key: Key,
        condition: Option<Condition>,
    },
    Transact(Vec<TxOp>),
}

enum Outcome {
    Done,
    Item(Item),
    Previous(Option<Item>),
}

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// Failure while applying one write: its own fault, or the store's.
enum Failure {
    Op(StorageError),
    Fatal(anyhow::Error),
}

impl From<StorageError> for Failure {
    fn from(error: StorageError) -> Self {
        Self::Op(error)
    }
}

macro_rules! fatal_from {
    ($($error:ty),*) => {$(
        impl From<$error> for Failure {
            fn from(error: $error) -> Self {
                Self::Fatal(error.into())
            }
        }
    )*};
}
fatal_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

fn backend(error: impl Into<anyhow::Error>) -> StorageError {
    StorageError::Backend(error.into())
}

impl EmbeddedStorage {
    /// Opens (creating if needed) the store at `path` with these tables.
    pub fn open(path: &Path, tables: &[TableDef]) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(backend)?;
        }
        let db = redb::Builder::new()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create(path)
            .map_err(backend)?;
        let mut infos = Tables::new();
        for def in tables {
            infos.insert(
                def.name,
                TableInfo {
                    def: *def,
                    main: format!("t:{}", def.name),
                    indexes: def
                        .indexes
                        .iter()
                        .map(|index| format!("i:{}:{}", def.name, index.name))
                        .collect(),
                },
            );
        }
        // Create every redb table up front so read transactions never meet a missing one.
        let txn = db.begin_write().map_err(backend)?;
        for info in infos.values() {
            txn.open_table(main_table(&info.main)).map_err(backend)?;
            for name in &info.indexes {
                txn.open_table(index_table(name)).map_err(backend)?;
            }
        }
        txn.commit().map_err(backend)?;

        let db = Arc::new(db);
        let tables = Arc::new(infos);
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("storage-writer".into())
            .spawn({
                let db = db.clone();
                let tables = tables.clone();
                move || writer_loop(&db, &tables, &receiver)
            })
            .map_err(backend)?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                tables,
                readers: tokio::runtime::Handle::try_current().ok(),
                writer: Some(sender),
                thread: Some(thread),
            }),
        })
    }

    async fn write(&self, op: WriteOp) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        let sender = self
            .inner
            .writer
            .as_ref()
            .ok_or_else(|| backend(anyhow::anyhow!("storage is closed")))?;
        sender
            .send(Job { op, reply })
            .map_err(|_| backend(anyhow::anyhow!("storage writer has stopped")))?;
        answer
            .await
            .map_err(|_| backend(anyhow::anyhow!("storage writer dropped a write")))?
    }

    /// Runs a short read on this thread (see the module's notes).
    fn read_now<T>(&self, read: impl FnOnce(&ReadTransaction, &Tables) -> Result<T>) -> Result<T> {
        let txn = self.inner.db.begin_read().map_err(backend)?;
        read(&txn, &self.inner.tables)
    }

    async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction, &Tables) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let job = move || {
            let txn = inner.db.begin_read().map_err(backend)?;
            read(&txn, &inner.tables)
        };
        let task = match &self.inner.readers {
            Some(readers) => readers.spawn_blocking(job),
            None => tokio::task::spawn_blocking(job),
        };
        task.await.map_err(backend)?
    }

    /// Deletes expired items now instead of at the next periodic sweep; returns how many.
    pub async fn sweep_expired(&self) -> Result<usize> {
        let db = self.inner.db.clone();
        let tables = self.inner.tables.clone();
        tokio::task::spawn_blocking(move || sweep(&db, &tables))
            .await
            .map_err(backend)?
    }
}

fn table<'t>(tables: &'t Tables, name: &str) -> Result<&'t TableInfo> {
    tables
        .get(name)
        .ok_or_else(|| StorageError::Invalid(format!("unknown table {name}")))
}

fn decode(bytes: &[u8]) -> Result<Item> {
    serde_json::from_slice(bytes).map_err(backend)
}

fn encode(item: &Item) -> Result<Vec<u8>> {
    serde_json::to_vec(item).map_err(backend)
}

// === impl writer ===

fn writer_loop(db: &Database, tables: &Tables, jobs: &mpsc::Receiver<Job>) {
    let mut last_sweep = Instant::now();
    loop {
        let first = match jobs.recv_timeout(SWEEP_INTERVAL) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                sweep_logged(db, tables, &mut last_sweep);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<WriteOp>, Vec<_>) =
            batch.into_iter().map(|job| (job.op, job.reply)).unzip();
        match apply_batch(db, tables, ops) {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "storage batch failed; nothing in it was written");
                let message = format!("{error:#}");
                for reply in replies {
                    let _ = reply.send(Err(backend(anyhow::anyhow!(message.clone()))));
                }
            }
        }
        if last_sweep.elapsed() >= SWEEP_INTERVAL {
            sweep_logged(db, tables, &mut last_sweep);
        }
    }
}

fn sweep_logged(db: &Database, tables: &Tables, last_sweep: &mut Instant) {
    *last_sweep = Instant::now();
    match sweep(db, tables) {
        Ok(0) => {}
        Ok(count) => tracing::debug!(count, "deleted expired items"),
        Err(error) => tracing::warn!(%error, "sweeping expired items failed"),
    }
}

/// Applies every write in one transaction; the per-write results are valid only once the
/// transaction has committed, which is why they are returned only then.
fn apply_batch(
    db: &Database,
    tables: &Tables,
    ops: Vec<WriteOp>,
) -> anyhow::Result<Vec<Result<Outcome>>> {
    let txn = db.begin_write()?;
    let now = now_epoch_seconds();
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        match apply(&txn, tables, op, now) {
            Ok(outcome) => outcomes.push(Ok(outcome)),
            Err(Failure::Op(error)) => outcomes.push(Err(error)),
            Err(Failure::Fatal(error)) => return Err(error),
        }
    }
    txn.commit()?;
    Ok(outcomes)
}

fn apply(
    txn: &WriteTransaction,
    tables: &Tables,
    op: WriteOp,
    now: i64,
) -> std::result::Result<Outcome, Failure> {
    match op {
        WriteOp::Put {
            table: name,
            item,
            condition,
        } => {
            let info = table(tables, name)?;
            let key = info.def.validate_item(&item)?;
            let (stored, live) = load(txn, info, &key, now)?;
            check(
                condition.as_ref(),
                live.as_ref(),
                StorageError::ConditionFailed,
            )?;
            store(txn, info, &key, stored.as_ref(), Some(&item))?;
            Ok(Outcome::Done)
        }
        WriteOp::Update {
            table: name,
            key,
            update,
            condition,
        } => {
            let info = table(tables, name)?;
            key.validate()?;
            let (stored, live) = load(txn, info, &key, now)?;
            check(
                condition.as_ref(),
                live.as_ref(),
                StorageError::ConditionFailed,
            )?;
            let next = updated(info, &key, live, &update)?;
            store(txn, info, &key, stored.as_ref(), Some(&next))?;
            Ok(Outcome::Item(next))
        }
        WriteOp::Delete {
            table: name,
            key,
            condition,
        } => {
            let info = table(tables, name)?;
            key.validate()?;
            let (stored, live) = load(txn, info, &key, now)?;
            check(
                condition.as_ref(),
                live.as_ref(),
                StorageError::ConditionFailed,
            )?;
            if stored.is_some() {
                store(txn, info, &key, stored.as_ref(), None)?;
            }
            Ok(Outcome::Previous(live))
        }
        WriteOp::Transact(ops) => {
            validate_transaction(&ops)?;
            // Decide everything before writing anything: the operations touch distinct items,
            // so evaluating them all first and then writing is the same as doing it atomically.
            let mut failed = Vec::new();
            let mut writes = Vec::with_capacity(ops.len());
            for (position, op) in ops.into_iter().enumerate() {
                let info = table(tables, op.table())?;
                let key = op.key()?;
                key.validate()?;
                let (stored, live) = load(txn, info, &key, now)?;
                if op.condition().is_some_and(|c| !c.holds(live.as_ref())) {
                    failed.push(position);
                    continue;
                }
                let next = match op {
                    TxOp::Put { item, .. } => {
                        info.def.validate_item(&item)?;
                        Some(item)
                    }
                    TxOp::Update { update, .. } => Some(updated(info, &key, live, &update)?),
                    TxOp::Delete { .. } => None,
                    TxOp::Check { .. } => continue,
                };
                writes.push((info, key, stored, next));
            }
            if !failed.is_empty() {
                return Err(StorageError::TransactionCanceled { failed }.into());
            }
            for (info, key, stored, next) in writes {
                if stored.is_some() || next.is_some() {
                    store(txn, info, &key, stored.as_ref(), next.as_ref())?;
                }
            }
            Ok(Outcome::Done)
        }
    }
}

fn check(
    condition: Option<&Condition>,
    live: Option<&Item>,
    failure: StorageError,
) -> std::result::Result<(), Failure> {
    match condition {
        Some(condition) if !condition.holds(live) => Err(Failure::Op(failure)),
        _ => Ok(()),
    }
}

/// The item after `update`: an absent (or expired) item starts from its key alone.
fn updated(
    info: &TableInfo,
    key: &Key,
    live: Option<Item>,
    update: &Update,
) -> std::result::Result<Item, Failure> {
    let mut next = live.unwrap_or_else(|| key.stamp(Item::new()));
    update.apply(&mut next)?;
    info.def.validate_item(&next)?;
    Ok(next)
}

/// The stored item (even if expired, whose index entries must still be cleaned up) and the live
/// one.
fn load(
    txn: &WriteTransaction,
    info: &TableInfo,
    key: &Key,
    now: i64,
) -> std::result::Result<(Option<Item>, Option<Item>), Failure> {
    let main = txn.open_table(main_table(&info.main))?;
    let stored = match main.get((key.pk.as_str(), key.sk.as_str()))? {
        Some(bytes) => Some(decode(bytes.value())?),
        None => None,
    };
    let live = stored
        .clone()
        .filter(|item| !info.def.is_expired(item, now));
    Ok((stored, live))
}

/// Replaces `old` by `new` (or removes it) and keeps every index in step.
fn store(
    txn: &WriteTransaction,
    info: &TableInfo,
    key: &Key,
    old: Option<&Item>,
    new: Option<&Item>,
) -> std::result::Result<(), Failure> {
    {
        let mut main = txn.open_table(main_table(&info.main))?;
        let at = (key.pk.as_str(), key.sk.as_str());
        match new {
            Some(item) => {
                main.insert(at, encode(item)?.as_slice())?;
            }
            None => {
                main.remove(at)?;
            }
        }
    }
    for (def, name) in info.def.indexes.iter().zip(&info.indexes) {
        let entry = |item: &Item| -> Option<(String, String)> {
            Some((
                item.get(def.pk)?.as_str()?.to_owned(),
                item.get(def.sk)?.as_str()?.to_owned(),
            ))
        };
        let before = old.and_then(entry);
        let after = new.and_then(entry);
        if before == after {
            continue;
        }
        let mut index = txn.open_table(index_table(name))?;
        if let Some((ipk, isk)) = &before {
            index.remove((ipk.as_str(), isk.as_str(), key.pk.as_str(), key.sk.as_str()))?;
        }
        if let Some((ipk, isk)) = &after {
            index.insert(
                (ipk.as_str(), isk.as_str(), key.pk.as_str(), key.sk.as_str()),
                (),
            )?;
        }
    }
    Ok(())
}

fn sweep(db: &Database, tables: &Tables) -> Result<usize> {
    let now = now_epoch_seconds();
    let txn = db.begin_write().map_err(backend)?;
    let mut deleted = 0;
    for info in tables.values() {
        if info.def.ttl_attribute.is_none() {
            continue;
        }
        let expired: Vec<(Key, Item)> = {
            let main = txn.open_table(main_table(&info.main)).map_err(backend)?;
            let mut found = Vec::new();
            for entry in main.iter().map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                let item = decode(value.value())?;
                if info.def.is_expired(&item, now) {
                    let (pk, sk) = key.value();
                    found.push((Key::new(pk, sk), item));
                    if deleted + found.len() >= SWEEP_LIMIT {
                        break;
                    }
                }
            }
            found
        };
        for (key, item) in &expired {
            store(&txn, info, key, Some(item), None).map_err(|failure| match failure {
                Failure::Op(error) => error,
                Failure::Fatal(error) => backend(error),
            })?;
        }
        deleted += expired.len();
        if deleted >= SWEEP_LIMIT {
            break;
        }
    }
    txn.commit().map_err(backend)?;
    Ok(deleted)
}

// === impl reads ===

/// The smallest string greater than every string starting with `prefix`, if there is one.
fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            char::MAX => continue,
            '\u{D7FF}' => '\u{E000}',
            other => char::from_u32(u32::from(other) + 1)?,
        };
        chars.push(next);
        return Some(chars.into_iter().collect());
    }
    None
}

fn query_main(
    txn: &ReadTransaction,
    info: &TableInfo,
    query: &Query,
    after: Option<&Position>,
    now: i64,
) -> Result<Page> {
    let main = txn.open_table(main_table(&info.main)).map_err(backend)?;
    let pk = query.partition.as_str();
    let past_partition = format!("{pk}\0");
    let successor = successor(&query.prefix);
    let end: Bound<(&str, &str)> = match &successor {
        Some(next) => Bound::Excluded((pk, next.as_str())),
        None => Bound::Excluded((past_partition.as_str(), "")),
    };
    let start: Bound<(&str, &str)> = Bound::Included((pk, query.prefix.as_str()));
    let (start, end) = match (after, query.descending) {
        (Some(at), false) => (Bound::Excluded((pk, at.sk.as_str())), end),
        (Some(at), true) => (start, Bound::Excluded((pk, at.sk.as_str()))),
        (None, _) => (start, end),
    };
    let range = main.range::<(&str, &str)>((start, end)).map_err(backend)?;
    let entries: Box<dyn Iterator<Item = _>> = if query.descending {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let mut items = Vec::new();
    for entry in entries {
        let (_, value) = entry.map_err(backend)?;
        let item = decode(value.value())?;
        if !info.def.is_expired(&item, now) {
            items.push(item);
            // One more than the limit tells whether another page exists.
            if items.len() > query.limit {
                break;
            }
        }
    }
    page(&info.def, None, items, query.limit)
}

fn query_index(
    txn: &ReadTransaction,
    info: &TableInfo,
    position: usize,
    query: &Query,
    after: Option<&Position>,
    now: i64,
) -> Result<Page> {
    let def = &info.def.indexes[position];
    let index = txn
        .open_table(index_table(&info.indexes[position]))
        .map_err(backend)?;
    let main = txn.open_table(main_table(&info.main)).map_err(backend)?;
    let ipk = query.partition.as_str();
    let past_partition = format!("{ipk}\0");
    let successor = successor(&query.prefix);
    let end: Bound<(&str, &str, &str, &str)> = match &successor {
        Some(next) => Bound::Excluded((ipk, next.as_str(), "", "")),
        None => Bound::Excluded((past_partition.as_str(), "", "", "")),
    };
    let start: Bound<(&str, &str, &str, &str)> =
        Bound::Included((ipk, query.prefix.as_str(), "", ""));
    let cursor_key = after.and_then(|at| {
        at.index.as_ref().map(|ix| {
            (
                ix.pk.as_str(),
                ix.sk.as_str(),
                at.pk.as_str(),
                at.sk.as_str(),
            )
        })
    });
    let (start, end) = match (cursor_key, query.descending) {
        (Some(at), false) => (Bound::Excluded(at), end),
        (Some(at), true) => (start, Bound::Excluded(at)),
        (None, _) => (start, end),
    };
    let range = index
        .range::<(&str, &str, &str, &str)>((start, end))
        .map_err(backend)?;
    let entries: Box<dyn Iterator<Item = _>> = if query.descending {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let mut items = Vec::new();
    for entry in entries {
        let (key, _) = entry.map_err(backend)?;
        let (_, _, pk, sk) = key.value();
        if let Some(bytes) = main.get((pk, sk)).map_err(backend)? {
            let item = decode(bytes.value())?;
            if !info.def.is_expired(&item, now) {
                items.push(item);
                if items.len() > query.limit {
                    break;
                }
            }
        }
    }
    page(&info.def, Some(def.name), items, query.limit)
}

/// Cuts the one-too-many item collected to learn whether more exist.
fn page(def: &TableDef, index: Option<&str>, mut items: Vec<Item>, limit: usize) -> Result<Page> {
    let next = if items.len() > limit {
        items.truncate(limit);
        match items.last() {
            Some(last) => Some(Cursor::after(def, index, last)?),
            None => None,
        }
    } else {
        None
    };
    Ok(Page { items, next })
}

#[async_trait]
impl Storage for EmbeddedStorage {
    async fn get(&self, table_name: &'static str, key: &Key) -> Result<Option<Item>> {
        key.validate()?;
        self.read_now(|txn, tables| {
            let info = table(tables, table_name)?;
            let main = txn.open_table(main_table(&info.main)).map_err(backend)?;
            let Some(bytes) = main
                .get((key.pk.as_str(), key.sk.as_str()))
                .map_err(backend)?
            else {
                return Ok(None);
            };
            let item = decode(bytes.value())?;
            Ok((!info.def.is_expired(&item, now_epoch_seconds())).then_some(item))
        })
    }

    async fn put(
        &self,
        table: &'static str,
        item: Item,
        condition: Option<Condition>,
    ) -> Result<()> {
        self.write(WriteOp::Put {
            table,
            item,
            condition,
        })
        .await
        .map(|_| ())
    }

    async fn update(
        &self,
        table: &'static str,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> Result<Item> {
        update.validate()?;
        match self
            .write(WriteOp::Update {
                table,
                key: key.clone(),
                update,
                condition,
            })
            .await?
        {
            Outcome::Item(item) => Ok(item),
            _ => Err(backend(anyhow::anyhow!("update returned no item"))),
        }
    }

    async fn delete(
        &self,
        table: &'static str,
        key: &Key,
        condition: Option<Condition>,
    ) -> Result<Option<Item>> {
        match self
            .write(WriteOp::Delete {
                table,
                key: key.clone(),
                condition,
            })
            .await?
        {
            Outcome::Previous(previous) => Ok(previous),
            _ => Err(backend(anyhow::anyhow!("delete returned no outcome"))),
        }
    }

    async fn query(&self, table_name: &'static str, query: Query) -> Result<Page> {
        query.validate()?;
        let after = match &query.cursor {
            Some(cursor) => Some(cursor.position(table_name, None, &query)?),
            None => None,
        };
        self.read(move |txn, tables| {
            let info = table(tables, table_name)?;
            query_main(txn, info, &query, after.as_ref(), now_epoch_seconds())
        })
        .await
    }

    async fn query_index(
        &self,
        table_name: &'static str,
        index: &'static str,
        query: Query,
    ) -> Result<Page> {
        query.validate()?;
        let after = match &query.cursor {
            Some(cursor) => Some(cursor.position(table_name, Some(index), &query)?),
            None => None,
        };
        self.read(move |txn, tables| {
            let info = table(tables, table_name)?;
            let position = info
                .def
                .indexes
                .iter()
                .position(|def| def.name == index)
                .ok_or_else(|| {
                    StorageError::Invalid(format!("table {table_name} has no index {index}"))
                })?;
            query_index(
                txn,
                info,
                position,
                &query,
                after.as_ref(),
                now_epoch_seconds(),
            )
        })
        .await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> Result<()> {
        validate_transaction(&ops)?;
        self.write(WriteOp::Transact(ops)).await.map(|_| ())
    }

    async fn ping(&self) -> Result<()> {
        self.read(|_, _| Ok(())).await
    }
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn successor_bounds_every_string_with_the_prefix() {
        assert_eq!(successor(""), None);
        assert_eq!(successor("ab").as_deref(), Some("ac"));
        assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        let next = successor("order#").expect("successor");
        assert!("order#zzzz" < next.as_str() && next.as_str() > "order#");
    }
}
