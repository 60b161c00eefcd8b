//! ECharts options for the report's charts, as JSON. The page's script
//! hands each to `echarts.init(...).setOption(...)`; strings that start
//! with `@` name one of its formatter functions (`@ms`, `@seconds`,
//! `@percentile`, `@count`), since JSON cannot carry functions.
//!
//! Every time chart shares one x axis: seconds since the load started,
//! with each fault drawn as a labelled band from injection to recovery.

use serde_json::{Value, json};

use crate::{
    faults::{self, FaultSpan},
    latency::{PercentilePoint, SecondLatency},
};
use run_log::{service_metrics::ServiceSecond, summary::LagSecond};

/// Colours of the percentile lines: p50 calm to max loud.
const LINE_COLOURS: [&str; 4] = ["#2b8a3e", "#1c7ed6", "#e8590c", "#c92a2a"];
/// Colours for endpoints (distribution) and for base/new (comparison).
const PALETTE: [&str; 6] = [
    "#1c7ed6", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#5c940d",
];

/// The x axis all time charts share.
#[derive(Debug, Clone, Copy)]
pub struct TimeAxis {
    pub end_s: f64,
}

fn time_axis(axis: TimeAxis) -> Value {
    json!({
        "type": "value",
        "name": "s since load start",
        "nameLocation": "middle",
        "nameGap": 26,
        "min": 0,
        "max": axis.end_s.ceil(),
        "axisLabel": { "formatter": "@seconds" },
        "splitLine": { "show": false },
    })
}

fn base(title: &str) -> Value {
    json!({
        "animation": false,
        "title": { "text": title, "left": "center", "textStyle": { "fontSize": 14 } },
        "grid": { "left": 64, "right": 64, "top": 56, "bottom": 64 },
        "legend": { "top": 24 },
        "tooltip": { "trigger": "axis", "valueFormatter": "@ms" },
        "toolbox": { "right": 8, "feature": {
            "dataZoom": { "yAxisIndex": "none" }, "restore": {}, "saveAsImage": {}
        }},
        // Zoom with shift + wheel (a plain wheel scrolls the page) or the
        // toolbox; "none": zooming must not drop the points outside the
        // window, or lines would stop short of the edges.
        "dataZoom": [{
            "type": "inside", "xAxisIndex": 0, "filterMode": "none",
            "zoomOnMouseWheel": "shift", "moveOnMouseWheel": false,
        }],
    })
}

/// The fault bands, as a markArea to attach to a chart's first series.
pub fn fault_bands(spans: &[FaultSpan], axis: TimeAxis) -> Value {
    let data: Vec<Value> = spans
        .iter()
        .map(|span| {
            json!([
                {
                    "name": span.label(),
                    "xAxis": span.injected_s,
                    "itemStyle": { "color": faults::colour(span.kind) },
                },
                { "xAxis": span.end_s(axis.end_s) },
            ])
        })
        .collect();
    json!({
        "silent": true,
        "label": { "position": "insideTop", "fontSize": 10, "color": "#343a40", "distance": 2 },
        "data": data,
    })
}

fn line(name: &str, colour: &str, data: Vec<Value>) -> Value {
    json!({
        "name": name,
        "type": "line",
        "showSymbol": false,
        "connectNulls": false,
        "lineStyle": { "width": 1.5 },
        "itemStyle": { "color": colour },
        "data": data,
    })
}

/// A point at the middle of its second.
fn at_second(second: f64, value: f64) -> Value {
    json!([second + 0.5, value])
}

/// p50 / p90 / p99 / max per second of one endpoint (log scale: a stall of
/// seconds and a steady 10 ms both stay readable).
pub fn latency_over_time(
    endpoint: &str,
    seconds: &[SecondLatency],
    spans: &[FaultSpan],
    axis: TimeAxis,
) -> Value {
    let series_of = |pick: fn(&SecondLatency) -> f64| -> Vec<Value> {
        seconds
            .iter()
            .map(|s| at_second(s.second as f64, pick(s).max(0.001)))
            .collect()
    };
    let mut series = vec![
        line("p50", LINE_COLOURS[0], series_of(|s| s.p50_ms)),
        line("p90", LINE_COLOURS[1], series_of(|s| s.p90_ms)),
        line("p99", LINE_COLOURS[2], series_of(|s| s.p99_ms)),
        line("max", LINE_COLOURS[3], series_of(|s| s.max_ms)),
    ];
    series[0]["markArea"] = fault_bands(spans, axis);
    let mut option = base(&format!("{endpoint}: latency per second"));
    option["xAxis"] = time_axis(axis);
    option["yAxis"] = json!({ "type": "log", "name": "ms", "axisLabel": { "formatter": "@ms" } });
    option["series"] = Value::Array(series);
    option
}

/// One second's outcomes over every endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecondOutcomes {
    pub second: u64,
    pub ok: u64,
    pub failed: u64,
    pub indeterminate: u64,
    /// Arrivals not issued (open-model load, every user busy).
    pub dropped: u64,
}

/// Responses per second by outcome, stacked.
pub fn throughput(seconds: &[SecondOutcomes], spans: &[FaultSpan], axis: TimeAxis) -> Value {
    let bars = |name: &str, colour: &str, pick: fn(&SecondOutcomes) -> u64| -> Value {
        json!({
            "name": name,
            "type": "bar",
            "stack": "outcomes",
            "barWidth": "90%",
            "itemStyle": { "color": colour },
            "data": seconds.iter().map(|s| at_second(s.second as f64, pick(s) as f64)).collect::<Vec<_>>(),
        })
    };
    let mut series = vec![
        bars("ok", "#40c057", |s| s.ok),
        bars("failed", "#fab005", |s| s.failed),
        bars("indeterminate", "#e03131", |s| s.indeterminate),
    ];
    if seconds.iter().any(|s| s.dropped > 0) {
        series.push(bars("dropped (not issued)", "#868e96", |s| s.dropped));
    }
    series[0]["markArea"] = fault_bands(spans, axis);
    let mut option = base("Responses per second, by outcome");
    option["tooltip"]["valueFormatter"] = json!("@count");
    option["xAxis"] = time_axis(axis);
    option["yAxis"] = json!({ "type": "value", "name": "responses/s" });
    option["series"] = Value::Array(series);
    option
}

/// The series of the services' own figures in [`history_lag`].
pub const OUTBOX_BACKLOG_SERIES: &str = "outbox backlog (wallet /metrics)";
pub const CONSUMER_LAG_SERIES: &str = "consumer lag (history /metrics)";

/// History lag (commit to visible) per second of visibility, with the
/// backlog on a second axis beside the services' own figures for it (the
/// wallet's outbox backlog, the consumers' lag), the load's end and the
/// convergence point.
pub fn history_lag(
    lag: &[LagSecond],
    services: &[ServiceSecond],
    spans: &[FaultSpan],
    axis: TimeAxis,
    load_end_s: f64,
    converged_at_s: Option<f64>,
) -> Value {
    let shown = || lag.iter().filter(|s| s.second >= 0);
    let percentile = |pick: fn(&LagSecond) -> Option<f64>| -> Vec<Value> {
        shown()
            .map(|s| match pick(s) {
                Some(ms) => at_second(s.second as f64, ms.max(0.001)),
                None => json!([s.second as f64 + 0.5, null]),
            })
            .collect()
    };
    let mut markers = vec![json!({
        "name": "load ended",
        "xAxis": load_end_s,
        "lineStyle": { "color": "#868e96", "type": "dashed" },
        "label": { "formatter": "load ended", "position": "insideEndTop" },
    })];
    if let Some(at) = converged_at_s {
        markers.push(json!({
            "name": "history converged",
            "xAxis": at,
            "lineStyle": { "color": "#2b8a3e", "type": "solid", "width": 2 },
            "label": { "formatter": format!("converged at {at:.1} s"), "position": "insideEndBottom" },
        }));
    }
    let mut series = vec![
        line("p50 lag", LINE_COLOURS[0], percentile(|s| s.p50_ms)),
        line("p99 lag", LINE_COLOURS[2], percentile(|s| s.p99_ms)),
        line("max lag", LINE_COLOURS[3], percentile(|s| s.max_ms)),
        json!({
            "name": "backlog (events)",
            "type": "line",
            "yAxisIndex": 1,
            "step": "end",
            "showSymbol": false,
            "lineStyle": { "width": 1, "color": "#868e96" },
            "areaStyle": { "color": "rgba(134, 142, 150, 0.18)" },
            "itemStyle": { "color": "#868e96" },
            "tooltip": { "valueFormatter": "@count" },
            "data": shown().map(|s| json!([s.second as f64 + 1.0, s.backlog])).collect::<Vec<_>>(),
        }),
    ];
    let own = |name: &str, colour: &str, pick: fn(&ServiceSecond) -> Option<f64>| {
        json!({
            "name": name,
            "type": "line",
            "yAxisIndex": 1,
            "showSymbol": false,
            "lineStyle": { "width": 1.5, "type": "dashed", "color": colour },
            "itemStyle": { "color": colour },
            "tooltip": { "valueFormatter": "@count" },
            "data": services
                .iter()
                .filter_map(|s| Some(json!([s.second as f64 + 0.5, pick(s)?])))
                .collect::<Vec<_>>(),
        })
    };
    if services.iter().any(|s| s.outbox_backlog.is_some()) {
        series.push(own(OUTBOX_BACKLOG_SERIES, LINE_COLOURS[1], |s| {
            s.outbox_backlog
        }));
    }
    if services.iter().any(|s| s.consumer_lag.is_some()) {
        series.push(own(CONSUMER_LAG_SERIES, "#7048e8", |s| s.consumer_lag));
    }
    series[0]["markArea"] = fault_bands(spans, axis);
    series[0]["markLine"] = json!({ "symbol": "none", "silent": true, "data": markers });
    let mut option = base("History lag: commit in the wallet to visible in history");
    option["xAxis"] = time_axis(axis);
    option["yAxis"] = json!([
        { "type": "log", "name": "lag ms", "axisLabel": { "formatter": "@ms" } },
        { "type": "value", "name": "backlog", "splitLine": { "show": false } },
    ]);
    option["series"] = Value::Array(series);
    option
}

/// Percentile distributions, HdrHistogram style: one line per named
/// distribution, latency against percentile on a log axis.
pub fn distribution(title: &str, lines: &[(String, Vec<PercentilePoint>)]) -> Value {
    let series: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(index, (name, points))| {
            let mut series = line(
                name,
                PALETTE[index % PALETTE.len()],
                points
                    .iter()
                    .map(|p| json!([p.inverted_tail(), p.latency_ms]))
                    .collect(),
            );
            series["step"] = json!("start");
            series
        })
        .collect();
    let mut option = base(title);
    option["tooltip"] = json!({ "trigger": "axis", "valueFormatter": "@ms", "axisPointer": { "label": { "formatter": "@percentileLabel" } } });
    option["xAxis"] = json!({
        "type": "log",
        "name": "percentile",
        "nameLocation": "middle",
        "nameGap": 26,
        "min": 1,
        "max": PercentilePoint::LAST.inverted_tail(),
        "axisLabel": { "formatter": "@percentile" },
    });
    option["yAxis"] = json!({ "type": "value", "name": "ms", "axisLabel": { "formatter": "@ms" } });
    option["series"] = Value::Array(series);
    option
}

/// JSON for a `<script type="application/json">` element: `<`, `>` and `&`
/// escaped so no text in the data can close the element.
pub fn script_json(value: &Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use run_log::FaultKind;

    use super::*;

    #[test]
    fn bands_span_injection_to_recovery_and_open_faults_to_the_axis_end() {
        let spans = [
            FaultSpan {
                fault_id: 1,
                kind: FaultKind::BrokerKill,
                target: "broker".into(),
                injected_s: 6.2,
                healed_s: Some(10.2),
                recovered_s: Some(10.4),
            },
            FaultSpan {
                fault_id: 2,
                kind: FaultKind::HistoryKill,
                target: "history".into(),
                injected_s: 16.0,
                healed_s: None,
                recovered_s: None,
            },
        ];
        let bands = fault_bands(&spans, TimeAxis { end_s: 30.0 });
        assert_eq!(bands["data"][0][0]["name"], "#1 broker_kill");
        assert_eq!(bands["data"][0][0]["xAxis"], 6.2);
        assert_eq!(bands["data"][0][1]["xAxis"], 10.4);
        assert_eq!(bands["data"][1][1]["xAxis"], 30.0);
    }

    #[test]
    fn latency_series_put_each_second_at_its_middle() {
        let seconds = [SecondLatency {
            second: 3,
            count: 10,
            p50_ms: 1.0,
            p90_ms: 2.0,
            p99_ms: 3.0,
            max_ms: 4.0,
        }];
        let option = latency_over_time("GET /x", &seconds, &[], TimeAxis { end_s: 9.5 });
        assert_eq!(option["series"][2]["name"], "p99");
        assert_eq!(option["series"][2]["data"][0], json!([3.5, 3.0]));
        assert_eq!(option["xAxis"]["max"], 10.0);
        assert_eq!(option["animation"], false);
    }

    #[test]
    fn script_json_cannot_close_its_element() {
        let text = script_json(&json!({ "message": "</script><b>&" }));
        assert!(
            !text.contains('<') && !text.contains('>') && !text.contains('&'),
            "{text}"
        );
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["message"], "</script><b>&");
    }
}
