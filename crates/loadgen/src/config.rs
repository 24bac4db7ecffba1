//! What a load run does: target, model (closed or open), duration, session mix, objectives.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Settings of a load run; `emporium load --help` lists them.
#[derive(Args, Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the storefront to load.
    #[arg(
        long,
        env = "EMPORIUM_LOAD_TARGET",
        default_value = "http://127.0.0.1:8080"
    )]
    pub target: String,

    /// Virtual shoppers of the closed model: each starts its next session when the last ends.
    #[arg(long, default_value_t = 16)]
    pub users: usize,

    /// Sessions started per second (the open model, instead of --users): arrivals keep their
    /// schedule whatever the shop does, and latency counts from the scheduled start.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Most sessions in flight in the open model; arrivals beyond it are dropped and counted as
    /// errors.
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,

    /// How long to apply load: `30s`, `2m`, `500ms`.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Time over which the closed model's shoppers join, evenly spread.
    #[arg(long = "ramp-up", default_value = "5s", value_parser = parse_duration)]
    pub ramp_up: Duration,

    /// Pause between a shopper's sessions (closed model).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub think: Duration,

    /// Session mix as `kind=weight` pairs; kinds are browse, search, view and buy.
    #[arg(long, default_value = "browse=40,search=25,view=20,buy=15", value_parser = Weights::parse)]
    pub weights: Weights,

    /// Share of checkouts paid with a declining test card (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    pub decline_share: f64,

    /// Timeout of one request, in milliseconds; a request that takes longer is an error.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,

    /// Exit non-zero when the p99 latency over all requests exceeds this many milliseconds.
    #[arg(long)]
    pub max_p99_ms: Option<f64>,

    /// Exit non-zero when more than this share of requests (0 to 1) are errors.
    #[arg(long)]
    pub max_error_rate: Option<f64>,

    /// Where to write the JSON result.
    #[arg(long, default_value = "loadtest-result.json")]
    pub out: PathBuf,

    /// Where to write the HTML report with charts.
    #[arg(long, default_value = "loadtest-report.html")]
    pub html: PathBuf,

    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadConfig {
    pub fn model(&self) -> Model {
        match self.rate {
            Some(rate) => Model::Open { rate },
            None => Model::Closed {
                users: self.users,
                ramp_up: self.ramp_up,
            },
        }
    }

    /// Refuses settings that cannot make a run.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            anyhow::bail!("--rate must be a positive number of sessions per second");
        }
        if self.rate.is_none() && self.users == 0 {
            anyhow::bail!("--users must be at least 1");
        }
        if self.duration.is_zero() {
            anyhow::bail!("--duration must be longer than 0");
        }
        if !(0.0..=1.0).contains(&self.decline_share) {
            anyhow::bail!("--decline-share is a share between 0 and 1");
        }
        if let Some(rate) = self.max_error_rate
            && !(0.0..=1.0).contains(&rate)
        {
            anyhow::bail!("--max-error-rate is a share between 0 and 1");
        }
        Ok(())
    }
}

/// How load is applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Model {
    Closed { users: usize, ramp_up: Duration },
    Open { rate: f64 },
}

/// Relative weights of the session kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    pub browse: u32,
    pub search: u32,
    pub view: u32,
    pub buy: u32,
}

impl Weights {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut weights = Self {
            browse: 0,
            search: 0,
            view: 0,
            buy: 0,
        };
        for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (kind, weight) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not kind=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("the weight of {kind} is not a whole number"))?;
            match kind.trim() {
                "browse" => weights.browse = weight,
                "search" => weights.search = weight,
                "view" => weights.view = weight,
                "buy" => weights.buy = weight,
                other => {
                    return Err(format!(
                        "unknown session kind {other:?} (browse, search, view, buy)"
                    ));
                }
            }
        }
        if weights.total() == 0 {
            return Err("at least one session kind needs a weight above 0".into());
        }
        Ok(weights)
    }

    pub fn total(&self) -> u32 {
        self.browse + self.search + self.view + self.buy
    }
}

/// `30s`, `2m`, `250ms`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 2m or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: use ms, s, m or h")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_weights_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
        let weights = Weights::parse("browse=1, buy=3").expect("weights");
        assert_eq!((weights.browse, weights.buy, weights.total()), (1, 3, 4));
        assert!(Weights::parse("dance=1").is_err());
        assert!(Weights::parse("browse=0").is_err());
        assert!(Weights::parse("browse=x").is_err());
    }
}
