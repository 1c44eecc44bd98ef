//! The Prometheus HTTP API v1 (query, query_range, series, labels, label
//! values, metadata, query_exemplars, status/buildinfo, format_query,
//! parse_query, remote read), response-compatible with
//! Prometheus: the same JSON shapes, the same error format
//! (`{"status":"error","errorType":...,"error":...}`), under
//! `/prometheus/api/v1/` and `/api/v1/`. Every request is scoped to its
//! tenant.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::routing::get;
use serde_json::{Value as Json, json};

use super::params::{Params, parse_duration, parse_selector, parse_time, query_selectors};
use super::{ApiError, Querier};
use crate::model::histogram::FloatHistogram;
use crate::model::{Labels, Matcher};
use crate::promql::{QueryError, QueryResult, Value};
use crate::ring::desc::now_ms;
use crate::tenant::{AuthConfig, AuthState, Tenant};

#[derive(Clone)]
pub struct ApiState {
    pub querier: Arc<Querier>,
    pub auth: Arc<AuthConfig>,
    pub remote_read: super::remote_read::ReadMetrics,
}

impl AuthState for ApiState {
    fn auth(&self) -> &AuthConfig {
        &self.auth
    }
}

/// The API's routes under both prefixes.
pub fn routes(state: ApiState) -> Router {
    let api = Router::new()
        .route("/query", get(query).post(query))
        .route("/query_range", get(query_range).post(query_range))
        .route("/series", get(series).post(series))
        .route("/labels", get(labels).post(labels))
        .route("/label/{name}/values", get(label_values))
        .route("/metadata", get(metadata))
        .route("/query_exemplars", get(exemplars).post(exemplars))
        .route("/status/buildinfo", get(buildinfo))
        .route("/format_query", get(query_text).post(query_text))
        .route("/parse_query", get(query_text).post(query_text))
        .route(
            "/read",
            axum::routing::post(super::remote_read::read).layer(
                axum::extract::DefaultBodyLimit::max(super::remote_read::MAX_REQUEST_BYTES),
            ),
        )
        .with_state(state);
    Router::new()
        .nest("/prometheus/api/v1", api.clone())
        .nest("/api/v1", api)
}

fn success(data: Json) -> Json {
    json!({"status": "success", "data": data})
}

/// A float as Prometheus writes sample values (`util/jsonutil`
/// `MarshalFloat`): Go's shortest `'f'` format, or `'e'` (two exponent
/// digits at least, signed) below 1e-6 and from 1e21 on.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else if v != 0.0 && (v.abs() < 1e-6 || v.abs() >= 1e21) {
        let text = format!("{v:e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) => {
                let (sign, digits) = match exponent.strip_prefix('-') {
                    Some(digits) => ('-', digits),
                    None => ('+', exponent),
                };
                format!("{mantissa}e{sign}{digits:0>2}")
            }
            None => text,
        }
    } else {
        format!("{v}")
    }
}

/// Milliseconds as the API's Unix seconds.
/// Milliseconds as Unix seconds, a whole number when they are whole (as
/// Prometheus writes `1700000000`, not `1700000000.0`).
fn seconds(t: i64) -> Json {
    if t % 1000 == 0 {
        return Json::from(t / 1000);
    }
    serde_json::Number::from_f64(t as f64 / 1000.0)
        .map(Json::Number)
        .unwrap_or(Json::Null)
}

fn metric(labels: &Labels) -> Json {
    let map: serde_json::Map<String, Json> = labels
        .iter()
        .map(|l| (l.name.clone(), Json::String(l.value.clone())))
        .collect();
    Json::Object(map)
}

/// A native histogram as Prometheus writes it (`util/jsonutil`
/// `MarshalHistogram`): count, sum and the populated buckets as
/// `[boundary_rule, lower, upper, count]`, where the rule says which ends
/// are inclusive (Prometheus's `Bucket.LowerInclusive`/`UpperInclusive`):
/// 0 `(lower, upper]` (positive buckets, custom buckets but the first),
/// 1 `[lower, upper)` (negative buckets), 3 `[lower, upper]` (the zero
/// bucket, and the first custom bucket, from -Inf). Without populated
/// buckets the `buckets` field is left out.
pub fn histogram_json(h: &FloatHistogram) -> Json {
    let custom = h.uses_custom_buckets();
    let buckets: Vec<Json> = h
        .all_buckets()
        .into_iter()
        .filter(|b| b.count != 0.0)
        .map(|b| {
            let (lower_inclusive, upper_inclusive) = if custom {
                (b.lower == f64::NEG_INFINITY, true)
            } else if b.lower <= 0.0 && b.upper >= 0.0 {
                // The zero bucket: the only one spanning zero.
                (true, true)
            } else {
                (b.lower < 0.0, b.upper > 0.0)
            };
            let rule = match (lower_inclusive, upper_inclusive) {
                (true, true) => 3,
                (true, false) => 1,
                (false, true) => 0,
                (false, false) => 2,
            };
            json!([
                rule,
                format_value(b.lower),
                format_value(b.upper),
                format_value(b.count)
            ])
        })
        .collect();
    let mut out = json!({"count": format_value(h.count), "sum": format_value(h.sum)});
    if !buckets.is_empty() {
        out["buckets"] = Json::Array(buckets);
    }
    out
}

fn result_json(result: &QueryResult) -> Json {
    let (kind, data) = match &result.value {
        Value::Scalar { t, v } => ("scalar", json!([seconds(*t), format_value(*v)])),
        Value::String { t, s } => ("string", json!([seconds(*t), s])),
        Value::Vector(samples) => (
            "vector",
            Json::Array(
                samples
                    .iter()
                    .map(|s| match &s.h {
                        Some(h) => json!({"metric": metric(&s.labels), "histogram": [seconds(s.t), histogram_json(h)]}),
                        None => json!({"metric": metric(&s.labels), "value": [seconds(s.t), format_value(s.v)]}),
                    })
                    .collect(),
            ),
        ),
        Value::Matrix(series) => (
            "matrix",
            Json::Array(
                series
                    .iter()
                    .map(|s| {
                        let values: Vec<Json> = s
                            .samples
                            .iter()
                            .map(|p| json!([seconds(p.t), format_value(p.v)]))
                            .collect();
                        let mut out = json!({"metric": metric(&s.labels)});
                        if !values.is_empty() {
                            out["values"] = Json::Array(values);
                        }
                        if !s.histograms.is_empty() {
                            out["histograms"] = s
                                .histograms
                                .iter()
                                .map(|p| json!([seconds(p.t), histogram_json(&p.h)]))
                                .collect();
                        }
                        out
                    })
                    .collect(),
            ),
        ),
    };
    let mut body = success(json!({"resultType": kind, "result": data}));
    if !result.warnings.is_empty() {
        body["warnings"] = json!(result.warnings);
    }
    if !result.infos.is_empty() {
        body["infos"] = json!(result.infos);
    }
    body
}

fn params(method: &Method, headers: &HeaderMap, query: &Option<String>, body: &Bytes) -> Params {
    Params::parse(method, headers, query.as_deref(), body)
}

fn time_param(params: &Params, name: &str, default: i64) -> Result<i64, ApiError> {
    match params.get(name) {
        None => Ok(default),
        Some(value) => parse_time(value)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"{name}\": {e}"))),
    }
}

/// A parameter that must be present, parsed by `parse`.
fn required(
    params: &Params,
    name: &str,
    parse: fn(&str) -> Result<i64, String>,
) -> Result<i64, ApiError> {
    let value = params
        .get(name)
        .ok_or_else(|| ApiError::bad_data(format!("invalid parameter \"{name}\": missing")))?;
    parse(value).map_err(|e| ApiError::bad_data(format!("invalid parameter \"{name}\": {e}")))
}

fn matchers_param(params: &Params) -> Result<Vec<Vec<Matcher>>, ApiError> {
    params
        .all("match[]")
        .into_iter()
        .map(|s| {
            parse_selector(s)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))
        })
        .collect()
}

fn limit_param(params: &Params) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(0),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ApiError::bad_data("limit must be a non-negative integer")),
    }
}

async fn query(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<axum::Json<Json>, ApiError> {
    let params = params(&method, &headers, &raw, &body);
    let expr = params
        .get("query")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": the query is empty"))?;
    let time = time_param(&params, "time", now_ms())?;
    let result = state.querier.instant(&tenant, expr, time).await?;
    Ok(axum::Json(result_json(&result)))
}

/// The `query` parameter parsed, or Prometheus's `bad_data` error.
fn parsed_query(
    method: &Method,
    headers: &HeaderMap,
    raw: &Option<String>,
    body: &Bytes,
) -> Result<promql_parser::parser::Expr, ApiError> {
    let params = params(method, headers, raw, body);
    let expr = params.get("query").unwrap_or("");
    promql_parser::parser::parse(expr)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))
}

/// `format_query` (the expression pretty-printed as Prometheus prints it)
/// and `parse_query` (its tree, as Prometheus's UI reads it).
async fn query_text(
    Tenant(_tenant): Tenant,
    uri: axum::http::Uri,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<axum::Json<Json>, ApiError> {
    let expr = parsed_query(&method, &headers, &raw, &body)?;
    Ok(axum::Json(success(
        if uri.path().ends_with("/parse_query") {
            super::ast_json::translate(&expr)
        } else {
            json!(expr.prettify())
        },
    )))
}

async fn query_range(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<axum::Json<Json>, ApiError> {
    let params = params(&method, &headers, &raw, &body);
    let expr = params
        .get("query")
        .ok_or_else(|| ApiError::bad_data("invalid parameter \"query\": the query is empty"))?;
    let start = required(&params, "start", parse_time)?;
    let end = required(&params, "end", parse_time)?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = required(&params, "step", parse_duration)?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > 11_000 {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let result = state.querier.range(&tenant, expr, start, end, step).await?;
    Ok(axum::Json(result_json(&result)))
}

async fn series(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<axum::Json<Json>, ApiError> {
    let params = params(&method, &headers, &raw, &body);
    let selectors = matchers_param(&params)?;
    if selectors.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let start = time_param(&params, "start", i64::MIN / 2)?;
    let end = time_param(&params, "end", i64::MAX / 2)?;
    let limit = limit_param(&params)?;
    let ingesters = state.querier.queryable(&tenant);
    let mut all: Vec<Labels> = Vec::new();
    for matchers in &selectors {
        all.extend(
            ingesters
                .series(matchers, start, end)
                .await
                .map_err(ApiError::internal)?,
        );
    }
    all.sort();
    all.dedup();
    let mut body = success(Json::Array(
        all.iter()
            .take(if limit == 0 { usize::MAX } else { limit })
            .map(metric)
            .collect(),
    ));
    if limit > 0 && all.len() > limit {
        body["warnings"] = json!(["results truncated due to limit"]);
    }
    Ok(axum::Json(body))
}

/// The union, sorted, of `fetch` over every `match[]` selector (or over no
/// matcher at all when there is none).
async fn union_over_selectors<F, Fut>(
    selectors: &[Vec<Matcher>],
    fetch: F,
) -> Result<Vec<String>, ApiError>
where
    F: Fn(Vec<Matcher>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, String>>,
{
    let mut all: Vec<String> = Vec::new();
    if selectors.is_empty() {
        all = fetch(Vec::new()).await.map_err(ApiError::internal)?;
    } else {
        for matchers in selectors {
            all.extend(fetch(matchers.clone()).await.map_err(ApiError::internal)?);
        }
        all.sort();
        all.dedup();
    }
    Ok(all)
}

async fn labels(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<axum::Json<Json>, ApiError> {
    let params = params(&method, &headers, &raw, &body);
    let selectors = matchers_param(&params)?;
    let start = time_param(&params, "start", i64::MIN / 2)?;
    let end = time_param(&params, "end", i64::MAX / 2)?;
    let limit = limit_param(&params)?;
    let ingesters = state.querier.queryable(&tenant);
    let names = union_over_selectors(&selectors, |matchers| {
        let ingesters = ingesters.clone();
        async move { ingesters.label_names(&matchers, start, end).await }
    })
    .await?;
    Ok(axum::Json(limited(names, limit)))
}

async fn label_values(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Json>, ApiError> {
    let params = params(&method, &headers, &raw, &Bytes::new());
    let selectors = matchers_param(&params)?;
    let start = time_param(&params, "start", i64::MIN / 2)?;
    let end = time_param(&params, "end", i64::MAX / 2)?;
    let limit = limit_param(&params)?;
    let ingesters = state.querier.queryable(&tenant);
    let values = union_over_selectors(&selectors, |matchers| {
        let ingesters = ingesters.clone();
        let name = name.clone();
        async move { ingesters.label_values(&name, &matchers, start, end).await }
    })
    .await?;
    Ok(axum::Json(limited(values, limit)))
}

fn limited(items: Vec<String>, limit: usize) -> Json {
    let truncated = limit > 0 && items.len() > limit;
    let shown: Vec<String> = if truncated {
        items.into_iter().take(limit).collect()
    } else {
        items
    };
    let mut body = success(json!(shown));
    if truncated {
        body["warnings"] = json!(["results truncated due to limit"]);
    }
    body
}

async fn metadata(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    RawQuery(raw): RawQuery,
) -> Result<axum::Json<Json>, ApiError> {
    let params = Params::parse(&Method::GET, &HeaderMap::new(), raw.as_deref(), &[]);
    let metric_name = params.get("metric").unwrap_or("");
    let limit = limit_param(&params)?;
    let all = state
        .querier
        .queryable(&tenant)
        .metadata(metric_name, 0)
        .await
        .map_err(ApiError::internal)?;
    let mut by_metric: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    for m in all {
        let kind = crate::proto::prometheus::metric_metadata::MetricType::try_from(m.r#type)
            .map(|t| t.as_str_name().to_ascii_lowercase())
            .unwrap_or_else(|_| "unknown".to_string());
        by_metric
            .entry(m.metric_family_name.clone())
            .or_default()
            .push(json!({"type": kind, "help": m.help, "unit": m.unit}));
    }
    let take = if limit == 0 { usize::MAX } else { limit };
    let data: serde_json::Map<String, Json> = by_metric
        .into_iter()
        .take(take)
        .map(|(k, v)| (k, Json::Array(v)))
        .collect();
    Ok(axum::Json(success(Json::Object(data))))
}

/// `/api/v1/query_exemplars?query=&start=&end=`: the exemplars of the
/// series any selector of `query` matches, from the ingesters (exemplars
/// live in their memory only), in Prometheus's shape.
async fn exemplars(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let params = params(&method, &headers, &raw, &body);
    let start = time_param(&params, "start", i64::MIN / 2)?;
    let end = time_param(&params, "end", i64::MAX / 2)?;
    if end < start {
        return Err(ApiError::bad_data(
            "end timestamp must not be before start timestamp",
        ));
    }
    let query = params.get("query").unwrap_or("");
    let selectors = query_selectors(query).map_err(ApiError::bad_data)?;
    if selectors.is_empty() {
        // Prometheus answers a query without series selectors with no
        // content at all.
        return Ok(axum::http::StatusCode::NO_CONTENT.into_response());
    }
    let found = state
        .querier
        .queryable(&tenant)
        .ingesters
        .exemplars(&selectors, start, end)
        .await
        .map_err(ApiError::internal)?;
    let data: Vec<Json> = found
        .into_iter()
        .map(|(labels, exemplars)| {
            json!({
                "seriesLabels": metric(&labels),
                "exemplars": exemplars
                    .into_iter()
                    .map(|e| {
                        let labels: serde_json::Map<String, Json> = e
                            .labels
                            .into_iter()
                            .map(|l| (l.name, Json::String(l.value)))
                            .collect();
                        json!({
                            "labels": labels,
                            "value": format_value(e.value),
                            "timestamp": seconds(e.timestamp),
                        })
                    })
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(axum::Json(success(Json::Array(data))).into_response())
}

async fn buildinfo() -> axum::Json<Json> {
    axum::Json(success(json!({
        "version": crate::metrics::VERSION,
        "revision": crate::metrics::REVISION,
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    })))
}

impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> ApiError {
        match err {
            QueryError::Parse(message) => ApiError::bad_data(message),
            QueryError::Execution(message) => ApiError::execution(message),
            QueryError::TooManySamples { .. } => ApiError::execution(err.to_string()),
            QueryError::Timeout => ApiError::timeout(err.to_string()),
            QueryError::Storage(message) => ApiError::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::histogram::{CUSTOM_BUCKETS_SCHEMA, Span};
    use crate::model::{HPoint, Sample};
    use crate::promql::{InstantSample, SeriesSamples};

    fn exponential() -> FloatHistogram {
        FloatHistogram {
            schema: 0,
            zero_threshold: 0.001,
            zero_count: 2.0,
            count: 12.0,
            sum: 20.5,
            positive_spans: vec![Span {
                offset: 0,
                length: 3,
            }],
            positive_buckets: vec![1.0, 0.0, 4.0],
            negative_spans: vec![Span {
                offset: 1,
                length: 1,
            }],
            negative_buckets: vec![5.0],
            ..FloatHistogram::default()
        }
    }

    #[test]
    fn floats_are_written_as_go_writes_them() {
        for (v, text) in [
            (1e-10, "1e-10"),
            (1.5e-7, "1.5e-07"),
            (-2.5e-300, "-2.5e-300"),
            (1e21, "1e+21"),
            (1e-6, "0.000001"),
            (1e20, "100000000000000000000"),
            (-123.456, "-123.456"),
            (0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(format_value(v), text, "{v}");
        }
    }

    #[test]
    fn histograms_are_written_as_prometheus_writes_them() {
        // What Prometheus 3.x answers for this histogram (json_codec.go).
        let want: Json = serde_json::from_str(
            r#"{"count":"12","sum":"20.5","buckets":[
                [1,"-2","-1","5"],
                [3,"-0.001","0.001","2"],
                [0,"0.5","1","1"],
                [0,"2","4","4"]]}"#,
        )
        .expect("valid JSON");
        assert_eq!(histogram_json(&exponential()), want);
        let custom = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count: 3.0,
            sum: 4.0,
            positive_spans: vec![Span {
                offset: 0,
                length: 3,
            }],
            positive_buckets: vec![1.0, 0.0, 2.0],
            custom_values: vec![1.0, 2.0],
            ..FloatHistogram::default()
        };
        let want: Json = serde_json::from_str(
            // Prometheus 3.16 (model/histogram/generic.go): the first custom
            // bucket is inclusive at both ends.
            r#"{"count":"3","sum":"4","buckets":[[3,"-Inf","1","1"],[0,"2","+Inf","2"]]}"#,
        )
        .expect("valid JSON");
        assert_eq!(histogram_json(&custom), want);
        let empty = FloatHistogram::default();
        assert_eq!(histogram_json(&empty), json!({"count": "0", "sum": "0"}));
    }

    #[test]
    fn vectors_and_matrices_carry_histograms() {
        let labels = Labels::from_pairs([("__name__", "h")]);
        let vector = QueryResult {
            value: Value::Vector(vec![InstantSample {
                labels: labels.clone(),
                t: 1500,
                v: 0.0,
                h: Some(exponential()),
            }]),
            warnings: Vec::new(),
            infos: Vec::new(),
        };
        let body = result_json(&vector);
        let sample = &body["data"]["result"][0];
        assert_eq!(sample["histogram"][0], json!(1.5));
        assert_eq!(sample["histogram"][1], histogram_json(&exponential()));
        assert!(sample.get("value").is_none());
        let matrix = QueryResult {
            value: Value::Matrix(vec![SeriesSamples {
                labels,
                samples: vec![Sample { t: 1000, v: 1.0 }],
                histograms: vec![HPoint {
                    t: 2000,
                    h: exponential(),
                }],
            }]),
            warnings: Vec::new(),
            infos: Vec::new(),
        };
        let body = result_json(&matrix);
        let series = &body["data"]["result"][0];
        assert_eq!(series["values"], json!([[1, "1"]]));
        assert_eq!(
            series["histograms"],
            json!([[2, histogram_json(&exponential())]])
        );
    }
}
