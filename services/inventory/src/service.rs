//! What the inventory does: stock levels, and reservations that hold stock all-or-nothing until
//! they are committed (sold), released, or expire.
//!
//! Reservation moves are idempotent: asking for the state a reservation is already in succeeds
//! and changes nothing, so callers can retry any of them after a timeout.

use std::sync::Arc;
use tracing::Instrument;

use emporium_api::inventory::{
    NewReservation, Reservation, ReservationStatus, Shortage, StockLevel, StockPage,
};
use emporium_ports::storage::{Storage, cursor_from_token, page_token};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use time::{Duration, OffsetDateTime};

use emporium_ports::events::Events;
use emporium_ports::events::consumer::Consumer;
use emporium_ports::events::outbox::Outbox;

use crate::domain::{self, MAX_SKUS_PER_READ, ReservationRequest};
use crate::error::InventoryError;
use crate::events::{ORDERS, OrderEvents, PRODUCER, StockEvents};
use crate::repository::{
    AdjustError, COMMIT, Move, MoveError, RELEASE, RETURN, Repository, ReserveError,
    StoredReservation, TABLE,
};

/// Expired reservations released per sweep; the rest wait for the next one.
const SWEEP_BATCH: usize = 100;
const DEFAULT_LIST_LIMIT: u32 = 50;
const MAX_LIST_LIMIT: u32 = 100;
const LIST_SCOPE: &str = "stock";

pub struct Inventory {
    repository: Repository,
    default_ttl_secs: u64,
    reservations: Family<ReservationOutcome, Counter>,
    conflicts: Counter,
}

/// Label of a reservation request's outcome: `held`, `repeated` (the same request again),
/// `out_of_stock`, or `id_conflict` (the id was used for other lines).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReservationOutcome {
    pub outcome: &'static str,
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("default_ttl_secs", &self.default_ttl_secs)
            .finish()
    }
}

fn parse_sku(raw: &str) -> Result<String, InventoryError> {
    emporium_api::sku::parse(raw).map_err(|_| InventoryError::StockNotFound(raw.to_owned()))
}

impl Inventory {
    /// The inventory over `storage`, its stock events going to `events` through its outbox.
    pub fn new(storage: Arc<dyn Storage>, default_ttl_secs: u64, events: Arc<dyn Events>) -> Self {
        let outbox = Outbox::new(storage.clone(), events, TABLE.name)
            .finishing(Arc::new(StockEvents::new(storage.clone())));
        Self {
            repository: Repository::new(storage, Arc::new(outbox)),
            default_ttl_secs,
            reservations: Family::default(),
            conflicts: Counter::default(),
        }
    }

    /// The outbox the stock writes record their notes in; its relay runs beside the server.
    pub fn outbox(&self) -> Arc<Outbox> {
        self.repository.outbox().clone()
    }

    /// The consumer of order events that sells and returns stock (`events.rs`).
    pub fn order_consumer(&self, events: Arc<dyn Events>) -> Consumer {
        Consumer::new(
            events,
            self.repository.storage().clone(),
            TABLE,
            ORDERS,
            Arc::new(OrderEvents::new(self.repository.clone())),
        )
        .traced(Arc::new(|event| {
            emporium_platform::telemetry::consumer_span(PRODUCER, ORDERS.name, event)
        }))
    }

    /// Reservation requests by outcome, for the service's metrics.
    pub fn reservation_outcomes(&self) -> Family<ReservationOutcome, Counter> {
        self.reservations.clone()
    }

    /// Moves of a reservation (commit, release, return, expiry) that lost a race with another
    /// and were decided again from the new state, for the service's metrics.
    pub fn reservation_conflicts(&self) -> Counter {
        self.conflicts.clone()
    }

    fn count(&self, outcome: &'static str) {
        self.reservations
            .get_or_create(&ReservationOutcome { outcome })
            .inc();
    }

    // === Stock ===

    pub async fn stock(&self, sku: &str) -> Result<StockLevel, InventoryError> {
        let sku = parse_sku(sku)?;
        self.repository
            .stock(&sku)
            .await?
            .ok_or(InventoryError::StockNotFound(sku))
    }

    /// The stock of the listed SKUs (comma-separated); SKUs without a record are left out.
    pub async fn stocks(&self, list: &str) -> Result<Vec<StockLevel>, InventoryError> {
        let mut skus = Vec::new();
        for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let sku = emporium_api::sku::parse(raw).map_err(|message| {
                InventoryError::InvalidQuery(format!("sku {raw:?} {message}"))
            })?;
            if !skus.contains(&sku) {
                skus.push(sku);
            }
        }
        if skus.is_empty() || skus.len() > MAX_SKUS_PER_READ {
            return Err(InventoryError::InvalidQuery(format!(
                "skus must name 1 to {MAX_SKUS_PER_READ} SKUs"
            )));
        }
        Ok(self.repository.stocks(&skus).await?)
    }

    pub async fn list_stock(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<StockPage, InventoryError> {
        let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(InventoryError::InvalidQuery(format!(
                "limit must be between 1 and {MAX_LIST_LIMIT}"
            )));
        }
        let after = match cursor {
            None | Some("") => None,
            Some(token) => Some(cursor_from_token(token, LIST_SCOPE)?),
        };
        let (items, next) = self.repository.list_stock(after, limit as usize).await?;
        Ok(StockPage {
            items,
            next_cursor: next.map(|cursor| page_token(&cursor, LIST_SCOPE)),
        })
    }

    pub async fn set_stock(&self, sku: &str, available: i64) -> Result<StockLevel, InventoryError> {
        let sku = emporium_api::sku::parse(sku).map_err(|message| {
            InventoryError::Validation(vec![emporium_platform::FieldError::new("sku", message)])
        })?;
        domain::check_available(available).map_err(InventoryError::Validation)?;
        Ok(self
            .repository
            .set_stock(&sku, available, OffsetDateTime::now_utc())
            .await?)
    }

    /// Creates a stock record unless the SKU has one (seeding); true if it did.
    pub async fn create_stock(&self, sku: &str, available: i64) -> Result<bool, InventoryError> {
        let sku = emporium_api::sku::parse(sku).map_err(|message| {
            InventoryError::Validation(vec![emporium_platform::FieldError::new("sku", message)])
        })?;
        domain::check_available(available).map_err(InventoryError::Validation)?;
        Ok(self
            .repository
            .create_stock(&sku, available, OffsetDateTime::now_utc())
            .await?)
    }

    pub async fn adjust_stock(&self, sku: &str, delta: i64) -> Result<StockLevel, InventoryError> {
        let sku = parse_sku(sku)?;
        domain::check_delta(delta).map_err(InventoryError::Validation)?;
        match self
            .repository
            .adjust(&sku, delta, OffsetDateTime::now_utc())
            .await
        {
            Ok(level) => Ok(level),
            Err(AdjustError::NotFound) => Err(InventoryError::StockNotFound(sku)),
            Err(AdjustError::Insufficient) => {
                let available = self
                    .repository
                    .stock(&sku)
                    .await?
                    .map_or(0, |s| s.available);
                Err(InventoryError::InsufficientStock { available })
            }
            Err(AdjustError::Storage(error)) => Err(error.into()),
        }
    }

    // === Reservations ===

    /// Holds every line's units or none. Returns the reservation and whether this call made it
    /// (a repeat with the same id and lines returns the existing one).
    pub async fn reserve(
        &self,
        input: &NewReservation,
    ) -> Result<(Reservation, bool), InventoryError> {
        let request = ReservationRequest::parse(input, self.default_ttl_secs)
            .map_err(InventoryError::Validation)?;
        let now = OffsetDateTime::now_utc();
        let expires_at =
            now + Duration::seconds(i64::try_from(request.ttl_secs).unwrap_or(i64::MAX));
        let reservation = StoredReservation {
            id: request.id.clone(),
            status: ReservationStatus::Held,
            lines: request.lines.clone(),
            expires_at,
            expires_epoch: expires_at.unix_timestamp(),
            lines_key: request.lines_key(),
            release_reason: None,
            created_at: now,
            updated_at: now,
        };
        match self.repository.reserve(&reservation).await {
            Ok(()) => {
                self.count("held");
                Ok((reservation.to_wire(), true))
            }
            Err(ReserveError::Exists) => {
                let existing = self.existing(&request.id).await?;
                if existing.is_fence() {
                    self.count("fenced");
                    return Err(InventoryError::ReservationReleased(request.id));
                }
                if existing.lines_key == reservation.lines_key {
                    self.count("repeated");
                    Ok((existing.to_wire(), false))
                } else {
                    self.count("id_conflict");
                    Err(InventoryError::ReservationConflict(request.id))
                }
            }
            Err(ReserveError::Short(positions)) => {
                self.count("out_of_stock");
                let mut short = Vec::new();
                for position in positions {
                    let Some(line) = request.lines.get(position) else {
                        continue;
                    };
                    let available = self
                        .repository
                        .stock(&line.sku)
                        .await?
                        .map_or(0, |level| level.available);
                    short.push(Shortage {
                        sku: line.sku.clone(),
                        requested: line.quantity,
                        available,
                    });
                }
                Err(InventoryError::OutOfStock(short))
            }
            Err(ReserveError::Storage(error)) => Err(error.into()),
        }
    }

    pub async fn reservation(&self, id: &str) -> Result<Reservation, InventoryError> {
        Ok(self.existing(id).await?.to_wire())
    }

    async fn existing(&self, id: &str) -> Result<StoredReservation, InventoryError> {
        if !domain::is_reservation_id(id) {
            return Err(InventoryError::ReservationNotFound(id.to_owned()));
        }
        self.repository
            .reservation(id)
            .await?
            .ok_or_else(|| InventoryError::ReservationNotFound(id.to_owned()))
    }

    /// Held → committed (sold). Committing a committed reservation changes nothing.
    pub async fn commit(&self, id: &str) -> Result<Reservation, InventoryError> {
        // A move can lose a race to another; the second look decides from the new state.
        for _ in 0..3 {
            let reservation = self.existing(id).await?;
            let now = OffsetDateTime::now_utc();
            match reservation.status {
                ReservationStatus::Committed => return Ok(reservation.to_wire()),
                ReservationStatus::Returned => {
                    return Err(InventoryError::ReservationCommitted(id.into()));
                }
                ReservationStatus::Released => {
                    return Err(
                        if reservation.release_reason.as_deref() == Some("expired") {
                            InventoryError::ReservationExpired(id.into())
                        } else {
                            InventoryError::ReservationReleased(id.into())
                        },
                    );
                }
                ReservationStatus::Held if reservation.has_expired(now.unix_timestamp()) => {
                    self.try_move(&reservation, RELEASE, Some("expired"), now)
                        .await?;
                    return Err(InventoryError::ReservationExpired(id.into()));
                }
                ReservationStatus::Held => {
                    if let Some(done) = self.try_move(&reservation, COMMIT, None, now).await? {
                        return Ok(done.to_wire());
                    }
                }
            }
        }
        Err(anyhow::anyhow!("reservation {id} kept changing during commit").into())
    }

    /// Held → released (available). Releasing a released reservation changes nothing.
    /// Releasing one not (yet) held fences its id: a reservation with it that arrives later
    /// is refused, so a hold that was slower than its release cannot strand stock.
    pub async fn release(&self, id: &str) -> Result<Reservation, InventoryError> {
        for _ in 0..3 {
            let reservation = match self.existing(id).await {
                Ok(reservation) => reservation,
                Err(InventoryError::ReservationNotFound(_)) if domain::is_reservation_id(id) => {
                    let now = OffsetDateTime::now_utc();
                    let fence = StoredReservation::fence(id, now);
                    if self.repository.fence(&fence).await? {
                        self.count("fenced_ahead");
                        return Ok(fence.to_wire());
                    }
                    // It arrived meanwhile: release it as any other.
                    continue;
                }
                Err(error) => return Err(error),
            };
            match reservation.status {
                ReservationStatus::Released => return Ok(reservation.to_wire()),
                ReservationStatus::Committed | ReservationStatus::Returned => {
                    return Err(InventoryError::ReservationCommitted(id.into()));
                }
                ReservationStatus::Held => {
                    let now = OffsetDateTime::now_utc();
                    if let Some(done) = self
                        .try_move(&reservation, RELEASE, Some("released"), now)
                        .await?
                    {
                        return Ok(done.to_wire());
                    }
                }
            }
        }
        Err(anyhow::anyhow!("reservation {id} kept changing during release").into())
    }

    /// Committed → returned (available again), for a cancelled order. Idempotent.
    pub async fn return_stock(&self, id: &str) -> Result<Reservation, InventoryError> {
        for _ in 0..3 {
            let reservation = self.existing(id).await?;
            match reservation.status {
                ReservationStatus::Returned => return Ok(reservation.to_wire()),
                ReservationStatus::Held | ReservationStatus::Released => {
                    return Err(InventoryError::ReservationNotCommitted(id.into()));
                }
                ReservationStatus::Committed => {
                    let now = OffsetDateTime::now_utc();
                    if let Some(done) = self.try_move(&reservation, RETURN, None, now).await? {
                        return Ok(done.to_wire());
                    }
                }
            }
        }
        Err(anyhow::anyhow!("reservation {id} kept changing during return").into())
    }

    /// The move, or `None` when the reservation changed under it.
    async fn try_move(
        &self,
        reservation: &StoredReservation,
        step: Move,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Option<StoredReservation>, InventoryError> {
        match self.repository.apply(reservation, step, reason, now).await {
            Ok(moved) => Ok(Some(moved)),
            Err(MoveError::Changed) => {
                self.conflicts.inc();
                Ok(None)
            }
            Err(MoveError::Storage(error)) => Err(error.into()),
        }
    }

    /// Returns the stock of reservations whose time ran out; how many were released.
    pub async fn release_expired(&self) -> Result<usize, InventoryError> {
        let now = OffsetDateTime::now_utc();
        let expired = self
            .repository
            .expired(now.unix_timestamp(), SWEEP_BATCH)
            .await?;
        if expired.is_empty() {
            return Ok(0);
        }
        // A pass with work to do is a trace of its own (an idle pass makes none).
        let span = tracing::info_span!(
            "sweep",
            otel.name = "release expired reservations",
            expired = expired.len()
        );
        async {
            let mut released = 0;
            for reservation in expired {
                // A commit that got there first wins; the reservation is then simply not expired.
                if self
                    .try_move(&reservation, RELEASE, Some("expired"), now)
                    .await?
                    .is_some()
                {
                    released += 1;
                }
            }
            Ok(released)
        }
        .instrument(span)
        .await
    }
}
