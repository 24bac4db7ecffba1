//! The human-readable report: one self-contained HTML page with the summary, a table per
//! request kind, and three charts drawn with plotters as inline SVG: throughput and latency
//! over time, and the latency distribution.

use plotters::prelude::*;

use crate::report::{Report, SecondStats};

const WIDTH: u32 = 860;
const HEIGHT: u32 = 300;
const BLUE: RGBColor = RGBColor(37, 99, 235);
const ORANGE: RGBColor = RGBColor(234, 88, 12);
const RED: RGBColor = RGBColor(190, 18, 60);

fn chart_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {error:?}")
}

/// One line of a chart, named in its legend.
struct Series {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// A line per series against the second of the run.
fn timeline_chart(caption: &str, seconds: usize, series: &[Series]) -> anyhow::Result<String> {
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(_, y)| *y))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..seconds.max(1) as f64, 0f64..top)
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .x_desc("second of the run")
            .draw()
            .map_err(chart_error)?;
        for line in series {
            let color = line.color;
            chart
                .draw_series(LineSeries::new(
                    line.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(chart_error)?
                .label(line.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK.mix(0.3))
            .background_style(WHITE.mix(0.9))
            .draw()
            .map_err(chart_error)?;
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

/// Requests and errors per second.
fn throughput(report: &Report) -> anyhow::Result<String> {
    let per_second = |name, color, pick: fn(&SecondStats) -> u64| Series {
        name,
        color,
        points: report
            .timeline
            .iter()
            .map(|s| (s.second as f64, pick(s) as f64))
            .collect(),
    };
    timeline_chart(
        "Throughput (requests per second)",
        report.timeline.len(),
        &[
            per_second("requests", BLUE, |s| s.requests),
            per_second("errors", RED, |s| s.errors),
        ],
    )
}

/// p50 and p99 latency per second (seconds without a request are left out).
fn latency_over_time(report: &Report) -> anyhow::Result<String> {
    let per_second = |name, color, pick: fn(&SecondStats) -> f64| Series {
        name,
        color,
        points: report
            .timeline
            .iter()
            .filter(|s| s.requests > 0)
            .map(|s| (s.second as f64, pick(s)))
            .collect(),
    };
    timeline_chart(
        "Latency over time (ms)",
        report.timeline.len(),
        &[
            per_second("p50", BLUE, |s| s.p50_ms),
            per_second("p99", ORANGE, |s| s.p99_ms),
        ],
    )
}

/// Latency against percentile, the tail spread out: x is the number of nines (90% → 1,
/// 99% → 2, 99.9% → 3).
fn distribution(report: &Report) -> anyhow::Result<String> {
    let nines = |percentile: f64| -((1.0 - percentile / 100.0).max(1e-5)).log10();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let top = report.latency.max_ms.max(1.0) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency distribution (ms)", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..5f64, 0f64..top)
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .x_labels(6)
            .x_label_formatter(&|x| match x.round() as i64 {
                0 => "0%".into(),
                1 => "90%".into(),
                2 => "99%".into(),
                3 => "99.9%".into(),
                4 => "99.99%".into(),
                _ => "100%".into(),
            })
            .draw()
            .map_err(chart_error)?;
        chart
            .draw_series(LineSeries::new(
                report
                    .distribution
                    .iter()
                    .map(|p| (nines(p.percentile), p.latency_ms)),
                BLUE.stroke_width(2),
            ))
            .map_err(chart_error)?;
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as one HTML page.
pub fn render(report: &Report) -> anyhow::Result<String> {
    let mut rows = String::new();
    for (name, stats) in &report.by_kind {
        let l = &stats.latency;
        rows.push_str(&format!(
            "<tr><td>{name}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>\n",
            stats.requests, stats.throughput_rps, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        ));
    }
    let l = &report.latency;
    rows.push_str(&format!(
        "<tr class=\"all\"><td>all</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>\n",
        report.requests, report.throughput_rps, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
    ));
    let mut errors = String::new();
    for (what, count) in &report.errors_by_kind {
        errors.push_str(&format!("<li>{}: {count}</li>", escape(what)));
    }
    if errors.is_empty() {
        errors.push_str("<li>none</li>");
    }
    let objectives = if report.objectives.met {
        "<p class=\"ok\">Objectives met.</p>".to_owned()
    } else {
        format!(
            "<p class=\"bad\">Objectives missed: {}</p>",
            escape(&report.objectives.missed.join("; "))
        )
    };
    Ok(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Emporium load test {started}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 900px; color: #1d232b; padding: 0 1rem; }}
table {{ border-collapse: collapse; width: 100%; margin: 1rem 0; }}
th, td {{ text-align: right; padding: .35rem .6rem; border-bottom: 1px solid #dde1e6; }}
th:first-child, td:first-child {{ text-align: left; }}
tr.all td {{ font-weight: 700; }}
.ok {{ color: #166534; font-weight: 600; }} .bad {{ color: #a61b1b; font-weight: 600; }}
figure {{ margin: 1.5rem 0; }} svg {{ max-width: 100%; height: auto; }}
</style></head>
<body>
<h1>Emporium load test</h1>
<p>{target} · started {started} · {duration:.1} s · {model}</p>
<p><strong>{requests}</strong> requests, <strong>{rps:.1}</strong> per second, <strong>{errors_count}</strong> errors ({rate:.2}%).
Orders placed: <strong>{orders}</strong>; out of stock: {oos}; declined: {declined}; pending: {pending}.</p>
{objectives}
<table><thead><tr><th>request</th><th>count</th><th>per second</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr></thead>
<tbody>
{rows}</tbody></table>
<h2>Errors</h2><ul>{errors}</ul>
<figure>{throughput}</figure>
<figure>{latency}</figure>
<figure>{distribution}</figure>
</body></html>
"#,
        target = escape(&report.target),
        started = escape(&report.started_at),
        duration = report.duration_secs,
        model = match &report.model {
            crate::report::ModelReport::Closed {
                users,
                ramp_up_secs,
            } => format!("closed model: {users} shoppers, {ramp_up_secs:.0} s ramp-up"),
            crate::report::ModelReport::Open { rate_per_sec } => {
                format!("open model: {rate_per_sec} sessions per second")
            }
        },
        requests = report.requests,
        rps = report.throughput_rps,
        errors_count = report.errors,
        rate = report.error_rate * 100.0,
        orders = report.business.orders_placed,
        oos = report.business.out_of_stock,
        declined = report.business.payment_declined,
        pending = report.business.checkout_pending,
        throughput = throughput(report)?,
        latency = latency_over_time(report)?,
        distribution = distribution(report)?,
    ))
}
