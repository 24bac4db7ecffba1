//! Emporium's load generator. Virtual shoppers run weighted sessions (browse, search, view a
//! product, buy) against the storefront's public API, each keeping its own session cookie as a
//! browser would. Two ways to apply load: a closed model (a fixed number of shoppers, each
//! starting a new session when the last ends) and an open model (sessions arrive at a fixed
//! rate whatever the system does; a request's latency counts from when it was meant to start,
//! so a stall is not hidden by the generator waiting for it — coordinated omission). Latencies
//! go into HdrHistograms per request kind and per second; the report carries throughput,
//! percentiles, errors by kind and the shop's business outcomes (orders placed, out-of-stock
//! and declined checkouts), and says whether the objectives were met.

pub mod config;
pub mod html;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;

pub use config::{LoadConfig, Model, Weights};
pub use report::Report;
pub use run::run;

/// Writes the JSON result and the HTML report where `config` says.
pub fn write(config: &LoadConfig, report: &Report) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::write(&config.out, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("cannot write {}", config.out.display()))?;
    std::fs::write(&config.html, html::render(report)?)
        .with_context(|| format!("cannot write {}", config.html.display()))?;
    Ok(())
}
