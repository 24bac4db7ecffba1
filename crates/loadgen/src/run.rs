//! Applying the load: the closed model's shoppers or the open model's arrivals, a live progress
//! line (indicatif), and the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::config::{LoadConfig, Model};
use crate::report::Report;
use crate::scenario::{Catalog, Session, Shopper};
use crate::stats::Recorder;

/// Runs the load `config` describes and reports what it measured.
pub async fn run(config: &LoadConfig) -> anyhow::Result<Report> {
    config.check()?;
    let target = config.target.trim_end_matches('/').to_owned();
    let timeout = Duration::from_millis(config.timeout_ms.max(1));
    let setup = reqwest::Client::builder().timeout(timeout).build()?;
    let catalog = Arc::new(
        Catalog::load(&setup, &target)
            .await
            .map_err(|e| e.context(format!("cannot read the catalog at {target}")))?,
    );
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let recorder = Arc::new(Recorder::new());
    let deadline = recorder.started() + config.duration;
    let progress = (!config.quiet).then(|| progress_line(recorder.clone(), config.duration));

    let connections = match config.model() {
        Model::Closed { users, .. } => users,
        Model::Open { .. } => config.max_in_flight.min(256),
    };
    let http = Shopper::client(timeout, connections)?;
    let shopper = |recorder: &Arc<Recorder>| {
        Shopper::new(
            http.clone(),
            &target,
            catalog.clone(),
            recorder.clone(),
            config.decline_share,
        )
    };
    let mut tasks = JoinSet::new();
    match config.model() {
        Model::Closed { users, ramp_up } => {
            for user in 0..users {
                let shopper = shopper(&recorder);
                let weights = config.weights;
                let think = config.think;
                // Shoppers join evenly over the ramp-up.
                let join_at =
                    recorder.started() + ramp_up.mul_f64(user as f64 / users.max(1) as f64);
                tasks.spawn(async move {
                    tokio::time::sleep_until(join_at.into()).await;
                    while Instant::now() < deadline {
                        let session = Session::pick(&weights, &mut rand::rng());
                        shopper.session(session, Instant::now()).await;
                        if !think.is_zero() {
                            tokio::time::sleep(think).await;
                        }
                    }
                });
            }
        }
        Model::Open { rate } => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let in_flight = Arc::new(AtomicUsize::new(0));
            let mut next = recorder.started();
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                if in_flight.load(Ordering::Relaxed) >= config.max_in_flight {
                    recorder.dropped();
                } else {
                    let shopper = shopper(&recorder);
                    let session = Session::pick(&config.weights, &mut rand::rng());
                    let in_flight = in_flight.clone();
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    let intended = next;
                    tasks.spawn(async move {
                        shopper.session(session, intended).await;
                        in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                next += interval;
                // Reap finished sessions as we go, so the set does not grow with the run.
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    Ok(Report::build(config, started_at, &recorder.snapshot()))
}

/// A progress bar over the run's duration, its message refreshed twice a second.
fn progress_line(
    recorder: Arc<Recorder>,
    duration: Duration,
) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::new(duration.as_secs().max(1));
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {elapsed_precise} {wide_msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let shown = bar.clone();
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let (per_second, errors, p99) = recorder.progress();
            shown.set_position(recorder.started().elapsed().as_secs());
            shown.set_message(format!(
                "{per_second} req/s, p99 {:.1} ms, {errors} errors",
                p99.as_secs_f64() * 1000.0
            ));
        }
    });
    (bar, ticker)
}
