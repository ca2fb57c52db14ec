//! The query API's `query_range`, within its limit of points per series.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::{FleetError, Query};

/// Prometheus refuses a range query of more than 11,000 points per series
/// ("exceeded maximum resolution"); each request asks at most this many.
pub const MAX_POINTS: i64 = 11_000;

/// The most of an answer read: a range query of a few thousand points over
/// some hundred series is a few MB; past this the selector is too broad.
const MAX_BODY: u64 = 256 << 20;

/// One instance's points, Unix milliseconds to value (`NaN` and `±Inf`
/// kept: the caller says which series and time they are).
pub type Points = BTreeMap<i64, f64>;

/// An aggregated query's answer, by the grouping label's value.
#[derive(Debug, Clone, Default)]
pub struct Matrix {
    pub query: String,
    pub by_instance: BTreeMap<String, Points>,
}

impl Matrix {
    pub fn is_empty(&self) -> bool {
        self.by_instance.values().all(|p| p.is_empty())
    }
}

/// One series of a raw selector, with all its labels.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Points,
}

/// A blocking client of one server's API.
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<AnswerData>,
}

#[derive(Deserialize)]
struct AnswerData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<RawSeries>,
}

#[derive(Deserialize)]
struct RawSeries {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// `NaN`, `+Inf` and `-Inf` as the API spells them, and numbers.
fn value(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or(f64::NAN),
    }
}

/// `[start, end]` on a grid of `step`, cut into pieces of at most
/// [`MAX_POINTS`] points each, none shared.
fn chunks(start: i64, end: i64, step: i64) -> Vec<(i64, i64)> {
    let span = (MAX_POINTS - 1).saturating_mul(step);
    let mut out = Vec::new();
    let mut from = start;
    while from <= end {
        let to = from.saturating_add(span).min(end);
        out.push((from, to));
        from = to.saturating_add(step);
    }
    out
}

impl Client {
    /// `base` is the server's root (`http://127.0.0.1:9090`), under which
    /// `/api/v1/query_range` answers. `timeout` bounds each request.
    pub fn new(base: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    /// The query's series over the range, chunked so no request asks more
    /// than [`MAX_POINTS`] per series, merged by label set.
    pub fn range_series(&self, query: &str, q: &Query) -> Result<Vec<Series>, FleetError> {
        let step = i64::try_from(q.step.max(1)).unwrap_or(i64::MAX);
        if q.end < q.start || q.step == 0 {
            return Err(FleetError::BadRange {
                start: q.start,
                end: q.end,
                step: q.step,
            });
        }
        let mut merged: BTreeMap<BTreeMap<String, String>, Points> = BTreeMap::new();
        for (from, to) in chunks(q.start, q.end, step) {
            for s in self.one_range(query, from, to, step)? {
                merged.entry(s.labels).or_default().extend(s.points);
            }
        }
        Ok(merged
            .into_iter()
            .map(|(labels, points)| Series { labels, points })
            .collect())
    }

    /// An aggregated query (`max by (LABEL) (…)`) by the label's value.
    pub fn range(&self, query: &str, q: &Query, label: &str) -> Result<Matrix, FleetError> {
        let mut by_instance: BTreeMap<String, Points> = BTreeMap::new();
        for s in self.range_series(query, q)? {
            let name = s.labels.get(label).cloned().unwrap_or_default();
            by_instance.entry(name).or_default().extend(s.points);
        }
        Ok(Matrix {
            query: query.to_string(),
            by_instance,
        })
    }

    fn one_range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<Series>, FleetError> {
        let url = format!("{}/api/v1/query_range", self.base);
        let began = std::time::Instant::now();
        let unreachable = |e: ureq::Error| FleetError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        };
        let mut resp = self
            .agent
            .get(&url)
            .query("query", query)
            .query("start", start.to_string())
            .query("end", end.to_string())
            .query("step", step.to_string())
            .call()
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(unreachable)?;
        tracing::debug!(query, start, end, step, status, bytes = body.len(), elapsed = ?began.elapsed(), "query_range");
        parse(query, status, &body)
    }
}

/// An answer's body as series, or the error it carries.
fn parse(query: &str, status: u16, body: &str) -> Result<Vec<Series>, FleetError> {
    let answer: Answer = serde_json::from_str(body).map_err(|_| FleetError::NotApi {
        query: query.to_string(),
        status,
        body: body.chars().take(200).collect(),
    })?;
    if answer.status != "success" {
        return Err(FleetError::Api {
            query: query.to_string(),
            error_type: answer.error_type.unwrap_or_else(|| "unknown".into()),
            error: answer
                .error
                .unwrap_or_else(|| format!("status {:?}", answer.status)),
        });
    }
    let data = answer.data.ok_or_else(|| FleetError::NotApi {
        query: query.to_string(),
        status,
        body: "no data in a successful answer".into(),
    })?;
    if data.result_type != "matrix" {
        return Err(FleetError::NotMatrix {
            query: query.to_string(),
            result_type: data.result_type,
        });
    }
    Ok(data
        .result
        .into_iter()
        .map(|r| Series {
            labels: r.metric,
            points: r
                .values
                .iter()
                .filter(|(t, _)| t.is_finite())
                .map(|(t, v)| ((t * 1000.0).round() as i64, value(v)))
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_range_within_the_points_limit() {
        for (start, end, step) in [
            (0, 0, 15),
            (0, 21_600, 1),
            (100, 100 + 10_999 * 15, 15),
            (7, 1_000_000, 3),
        ] {
            let c = chunks(start, end, step);
            assert_eq!(c[0].0, start);
            assert_eq!(c[c.len() - 1].1, end);
            for w in c.windows(2) {
                assert_eq!(w[1].0, w[0].1 + step, "{c:?}");
            }
            for (a, b) in &c {
                let points = (b - a) / step + 1;
                assert!(points <= MAX_POINTS, "{c:?}");
            }
        }
        assert_eq!(chunks(0, 21_600, 1).len(), 2);
        assert_eq!(chunks(100, 100 + 10_999 * 15, 15).len(), 1);
    }

    #[test]
    fn answers_become_series_or_the_error_they_carry() {
        let ok = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"instance":"a:1"},"values":[[1700000000,"3"],[1700000015.5,"NaN"]]}]}}"#;
        let s = parse("q", 200, ok).unwrap();
        assert_eq!(s[0].labels["instance"], "a:1");
        assert_eq!(s[0].points[&1_700_000_000_000], 3.0);
        assert!(s[0].points[&1_700_000_015_500].is_nan());
        let refused = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        let e = parse("q", 400, refused).unwrap_err().to_string();
        assert!(e.contains("bad_data: parse error"), "{e}");
        let e = parse("q", 502, "<html>Bad Gateway</html>").unwrap_err();
        assert!(matches!(e, FleetError::NotApi { status: 502, .. }), "{e}");
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(matches!(
            parse("q", 200, vector),
            Err(FleetError::NotMatrix { .. })
        ));
    }

    proptest::proptest! {
        /// Any body, any status: series or an error, never a panic.
        #[test]
        fn any_body_parses_or_errs(body in ".{0,200}", status in 0u16..600) {
            let _ = parse("q", status, &body);
        }

        /// Any matrix shape, timestamps and value spellings included.
        #[test]
        fn any_matrix_parses_or_errs(
            ts in proptest::collection::vec(proptest::num::f64::ANY, 0..8),
            vs in proptest::collection::vec("NaN|\\+Inf|-Inf|-?[0-9]{1,20}(\\.[0-9]{0,5})?(e[0-9]{1,3})?|x", 0..8),
        ) {
            let values: Vec<String> = ts
                .iter()
                .zip(&vs)
                .map(|(t, v)| format!("[{},\"{v}\"]", serde_json::to_string(t).unwrap()))
                .collect();
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[{}]}}]}}}}"#,
                values.join(",")
            );
            let _ = parse("q", 200, &body);
        }
    }

    #[test]
    fn the_apis_spellings_of_non_finite_values_parse() {
        assert!(value("NaN").is_nan());
        assert_eq!(value("+Inf"), f64::INFINITY);
        assert_eq!(value("-Inf"), f64::NEG_INFINITY);
        assert_eq!(value("12.5"), 12.5);
        assert!(value("twelve").is_nan());
    }
}
