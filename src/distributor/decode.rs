//! Decoding remote-write requests: snappy block format, then remote-write
//! 1.0 (`prometheus.WriteRequest`) or 2.0 (`io.prometheus.write.v2.Request`),
//! chosen by Content-Type as the specs say. 2.0 requests are resolved
//! against their symbol table into 1.0 series so that everything after the
//! decoder handles one shape.
//!
//! The decompressed size is capped before any decompression happens (snappy
//! states it up front), so an oversized body costs no memory.

use prost::Message;

use crate::proto::prometheus::{
    self as pb, Exemplar, Label, MetricMetadata, TimeSeries, metric_metadata,
};
use crate::proto::write_v2;

/// Which protobuf message a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Remote-write 1.0: `prometheus.WriteRequest`.
    V1,
    /// Remote-write 2.0: `io.prometheus.write.v2.Request`.
    V2,
}

impl Protocol {
    /// From the Content-Type header: `application/x-protobuf` (1.0), with
    /// `;proto=prometheus.WriteRequest` (1.0) or
    /// `;proto=io.prometheus.write.v2.Request` (2.0). A missing header is 1.0,
    /// as senders before the 2.0 spec did not always set one.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Protocol, DecodeError> {
        let Some(value) = content_type else {
            return Ok(Protocol::V1);
        };
        let mut parts = value.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        if media != "application/x-protobuf" {
            return Err(DecodeError::UnsupportedContentType(value.to_string()));
        }
        let mut protocol = Protocol::V1;
        for param in parts {
            let Some((key, val)) = param.split_once('=') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("proto") {
                protocol = match val.trim().trim_matches('"') {
                    "prometheus.WriteRequest" => Protocol::V1,
                    "io.prometheus.write.v2.Request" => Protocol::V2,
                    other => {
                        return Err(DecodeError::UnsupportedProto(other.to_string()));
                    }
                };
            }
        }
        Ok(protocol)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("unsupported Content-Type {0:?}: expected application/x-protobuf")]
    UnsupportedContentType(String),
    #[error(
        "unsupported proto {0:?}: expected prometheus.WriteRequest or io.prometheus.write.v2.Request"
    )]
    UnsupportedProto(String),
    #[error("unsupported Content-Encoding {0:?}: expected snappy")]
    UnsupportedEncoding(String),
    #[error(
        "request body is {size} bytes decompressed, more than the limit of {limit} bytes (distributor.max_recv_msg_size)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("snappy decode error: {0}")]
    Snappy(String),
    #[error("protobuf decode error: {0}")]
    Protobuf(String),
    #[error("remote-write 2.0: {0}")]
    Symbols(String),
}

/// A decoded request, in remote-write 1.0 shape.
#[derive(Debug, Default, PartialEq)]
pub struct WriteBatch {
    pub timeseries: Vec<TimeSeries>,
    pub metadata: Vec<MetricMetadata>,
    /// Created timestamps (2.0), per series index; empty for 1.0.
    pub created_timestamps: Vec<i64>,
}

/// Decompresses a snappy block, refusing to grow past `limit` bytes.
pub fn decompress(body: &[u8], limit: usize, scratch: &mut Vec<u8>) -> Result<(), DecodeError> {
    let size = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if size > limit {
        return Err(DecodeError::TooLarge { size, limit });
    }
    scratch.clear();
    scratch.resize(size, 0);
    let written = snap::raw::Decoder::new()
        .decompress(body, scratch)
        .map_err(|e| DecodeError::Snappy(e.to_string()))?;
    scratch.truncate(written);
    Ok(())
}

/// Decodes a decompressed protobuf body.
pub fn decode(protocol: Protocol, bytes: &[u8]) -> Result<WriteBatch, DecodeError> {
    match protocol {
        Protocol::V1 => {
            let request = pb::WriteRequest::decode(bytes)
                .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
            Ok(WriteBatch {
                timeseries: request.timeseries,
                metadata: request.metadata,
                created_timestamps: Vec::new(),
            })
        }
        Protocol::V2 => {
            let request = write_v2::Request::decode(bytes)
                .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
            from_v2(request)
        }
    }
}

fn symbol(symbols: &[String], index: u32, what: &str) -> Result<String, DecodeError> {
    symbols.get(index as usize).cloned().ok_or_else(|| {
        DecodeError::Symbols(format!(
            "{what} refers to symbol {index}, but the symbol table has {} entries",
            symbols.len()
        ))
    })
}

fn labels_from_refs(
    symbols: &[String],
    refs: &[u32],
    what: &str,
) -> Result<Vec<Label>, DecodeError> {
    if !refs.len().is_multiple_of(2) {
        return Err(DecodeError::Symbols(format!(
            "{what} has an odd number of label references ({})",
            refs.len()
        )));
    }
    refs.chunks_exact(2)
        .map(|pair| {
            Ok(Label {
                name: symbol(symbols, pair[0], what)?,
                value: symbol(symbols, pair[1], what)?,
            })
        })
        .collect()
}

fn metric_type_v2_to_v1(t: i32) -> metric_metadata::MetricType {
    use write_v2::metadata::MetricType as V2;
    match V2::try_from(t).unwrap_or(V2::Unspecified) {
        V2::Unspecified => metric_metadata::MetricType::Unknown,
        V2::Counter => metric_metadata::MetricType::Counter,
        V2::Gauge => metric_metadata::MetricType::Gauge,
        V2::Histogram => metric_metadata::MetricType::Histogram,
        V2::Gaugehistogram => metric_metadata::MetricType::Gaugehistogram,
        V2::Summary => metric_metadata::MetricType::Summary,
        V2::Info => metric_metadata::MetricType::Info,
        V2::Stateset => metric_metadata::MetricType::Stateset,
    }
}

/// The metric family a series of a remote-write 2.0 request belongs to,
/// as `/api/v1/metadata` names families: a classic histogram's
/// `_bucket`, `_sum` and `_count` series (`_gsum`, `_gcount` of a gauge
/// histogram) and a summary's `_sum` and `_count` belong to the family
/// without the suffix.
fn family_name(name: &str, kind: metric_metadata::MetricType) -> &str {
    use metric_metadata::MetricType as T;
    let suffixes: &[&str] = match kind {
        T::Histogram => &["_bucket", "_sum", "_count"],
        T::Gaugehistogram => &["_bucket", "_gsum", "_gcount"],
        T::Summary => &["_sum", "_count"],
        _ => &[],
    };
    suffixes
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .filter(|family| !family.is_empty())
        .unwrap_or(name)
}

fn from_v2(request: write_v2::Request) -> Result<WriteBatch, DecodeError> {
    let symbols = request.symbols;
    let mut batch = WriteBatch::default();
    for (index, series) in request.timeseries.into_iter().enumerate() {
        let what = format!("timeseries[{index}]");
        let labels = labels_from_refs(&symbols, &series.labels_refs, &what)?;
        let exemplars = series
            .exemplars
            .iter()
            .map(|e| {
                Ok(Exemplar {
                    labels: labels_from_refs(&symbols, &e.labels_refs, &what)?,
                    value: e.value,
                    timestamp: e.timestamp,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        if let Some(meta) = &series.metadata {
            let help = symbol(&symbols, meta.help_ref, &what)?;
            let unit = symbol(&symbols, meta.unit_ref, &what)?;
            let has_type = meta.r#type != 0;
            if has_type || !help.is_empty() || !unit.is_empty() {
                let name = labels
                    .iter()
                    .find(|l| l.name == crate::model::METRIC_NAME)
                    .map(|l| l.value.clone())
                    .unwrap_or_default();
                let r#type = metric_type_v2_to_v1(meta.r#type);
                batch.metadata.push(MetricMetadata {
                    r#type: r#type as i32,
                    metric_family_name: family_name(&name, r#type).to_string(),
                    help,
                    unit,
                });
            }
        }
        let samples = series
            .samples
            .into_iter()
            .map(|s| pb::Sample {
                value: s.value,
                timestamp: s.timestamp,
            })
            .collect();
        let histograms = series
            .histograms
            .into_iter()
            .map(histogram_v2_to_v1)
            .collect();
        batch.timeseries.push(TimeSeries {
            labels,
            samples,
            exemplars,
            histograms,
        });
        batch.created_timestamps.push(series.created_timestamp);
    }
    Ok(batch)
}

fn histogram_v2_to_v1(h: write_v2::Histogram) -> pb::Histogram {
    let span = |s: write_v2::BucketSpan| pb::BucketSpan {
        offset: s.offset,
        length: s.length,
    };
    pb::Histogram {
        count: h.count.map(|c| match c {
            write_v2::histogram::Count::CountInt(v) => pb::histogram::Count::CountInt(v),
            write_v2::histogram::Count::CountFloat(v) => pb::histogram::Count::CountFloat(v),
        }),
        sum: h.sum,
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: h.zero_count.map(|c| match c {
            write_v2::histogram::ZeroCount::ZeroCountInt(v) => {
                pb::histogram::ZeroCount::ZeroCountInt(v)
            }
            write_v2::histogram::ZeroCount::ZeroCountFloat(v) => {
                pb::histogram::ZeroCount::ZeroCountFloat(v)
            }
        }),
        negative_spans: h.negative_spans.into_iter().map(span).collect(),
        negative_deltas: h.negative_deltas,
        negative_counts: h.negative_counts,
        positive_spans: h.positive_spans.into_iter().map(span).collect(),
        positive_deltas: h.positive_deltas,
        positive_counts: h.positive_counts,
        reset_hint: h.reset_hint,
        timestamp: h.timestamp,
        custom_values: h.custom_values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(bytes: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(bytes)
            .expect("compresses")
    }

    #[test]
    fn content_types() {
        assert_eq!(Protocol::from_content_type(None), Ok(Protocol::V1));
        assert_eq!(
            Protocol::from_content_type(Some("application/x-protobuf")),
            Ok(Protocol::V1)
        );
        assert_eq!(
            Protocol::from_content_type(Some(
                "application/x-protobuf;proto=io.prometheus.write.v2.Request"
            )),
            Ok(Protocol::V2)
        );
        assert_eq!(
            Protocol::from_content_type(Some(
                "application/x-protobuf; proto=prometheus.WriteRequest"
            )),
            Ok(Protocol::V1)
        );
        assert!(matches!(
            Protocol::from_content_type(Some("application/json")),
            Err(DecodeError::UnsupportedContentType(_))
        ));
        assert!(matches!(
            Protocol::from_content_type(Some("application/x-protobuf;proto=foo.Bar")),
            Err(DecodeError::UnsupportedProto(_))
        ));
    }

    #[test]
    fn size_is_capped_before_decompressing() {
        let body = compress(&vec![0u8; 4096]);
        let mut scratch = Vec::new();
        assert_eq!(
            decompress(&body, 1000, &mut scratch),
            Err(DecodeError::TooLarge {
                size: 4096,
                limit: 1000
            })
        );
        assert!(scratch.is_empty(), "nothing was decompressed");
        decompress(&body, 4096, &mut scratch).expect("fits");
        assert_eq!(scratch.len(), 4096);
        assert!(matches!(
            decompress(b"\xff\xff\xff\xff\xffgarbage", 1 << 20, &mut scratch),
            Err(DecodeError::Snappy(_))
        ));
    }

    #[test]
    fn v1_round_trip() {
        let request = pb::WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![pb::Sample {
                    value: 1.0,
                    timestamp: 1000,
                }],
                ..Default::default()
            }],
            metadata: vec![],
        };
        let batch = decode(Protocol::V1, &request.encode_to_vec()).expect("decodes");
        assert_eq!(batch.timeseries, request.timeseries);
        assert!(matches!(
            decode(Protocol::V1, b"\x0a\xff\xff"),
            Err(DecodeError::Protobuf(_))
        ));
    }

    #[test]
    fn v2_resolves_symbols_and_metadata() {
        let request = write_v2::Request {
            symbols: vec![
                "".into(),
                "__name__".into(),
                "http_requests_total".into(),
                "job".into(),
                "api".into(),
                "Requests.".into(),
            ],
            timeseries: vec![write_v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![write_v2::Sample {
                    value: 5.0,
                    timestamp: 2000,
                }],
                metadata: Some(write_v2::Metadata {
                    r#type: write_v2::metadata::MetricType::Counter as i32,
                    help_ref: 5,
                    unit_ref: 0,
                }),
                created_timestamp: 1000,
                ..Default::default()
            }],
        };
        let batch = decode(Protocol::V2, &request.encode_to_vec()).expect("decodes");
        assert_eq!(batch.timeseries.len(), 1);
        assert_eq!(batch.timeseries[0].labels[1].value, "api");
        assert_eq!(batch.timeseries[0].samples[0].timestamp, 2000);
        assert_eq!(batch.metadata[0].metric_family_name, "http_requests_total");
        use metric_metadata::MetricType as T;
        assert_eq!(
            family_name("rpc_seconds_bucket", T::Histogram),
            "rpc_seconds"
        );
        assert_eq!(family_name("rpc_seconds_count", T::Summary), "rpc_seconds");
        assert_eq!(family_name("rpc_seconds", T::Summary), "rpc_seconds");
        assert_eq!(family_name("queue_gsum", T::Gaugehistogram), "queue");
        assert_eq!(family_name("jobs_count", T::Gauge), "jobs_count");
        assert_eq!(family_name("_count", T::Summary), "_count");
        assert_eq!(batch.metadata[0].help, "Requests.");
        assert_eq!(
            batch.metadata[0].r#type,
            metric_metadata::MetricType::Counter as i32
        );
        assert_eq!(batch.created_timestamps, vec![1000]);
    }

    #[test]
    fn v2_histograms_map_field_for_field() {
        let v2 =
            |count, zero_count, deltas: Vec<i64>, counts: Vec<f64>, schema, custom: Vec<f64>| {
                write_v2::Histogram {
                    count: Some(count),
                    sum: 2.5,
                    schema,
                    zero_threshold: 0.0,
                    zero_count: Some(zero_count),
                    negative_spans: vec![],
                    negative_deltas: vec![],
                    negative_counts: vec![],
                    positive_spans: vec![write_v2::BucketSpan {
                        offset: 0,
                        length: 2,
                    }],
                    positive_deltas: deltas,
                    positive_counts: counts,
                    reset_hint: write_v2::histogram::ResetHint::Gauge as i32,
                    timestamp: 7,
                    custom_values: custom,
                }
            };
        let request = write_v2::Request {
            symbols: vec!["".into(), "__name__".into(), "h".into()],
            timeseries: vec![write_v2::TimeSeries {
                labels_refs: vec![1, 2],
                histograms: vec![
                    v2(
                        write_v2::histogram::Count::CountInt(3),
                        write_v2::histogram::ZeroCount::ZeroCountInt(0),
                        vec![1, 1],
                        vec![],
                        -53,
                        vec![0.5],
                    ),
                    v2(
                        write_v2::histogram::Count::CountFloat(3.5),
                        write_v2::histogram::ZeroCount::ZeroCountFloat(0.5),
                        vec![],
                        vec![1.0, 2.0],
                        3,
                        vec![],
                    ),
                ],
                ..Default::default()
            }],
        };
        let batch = decode(Protocol::V2, &request.encode_to_vec()).expect("decodes");
        let hs = &batch.timeseries[0].histograms;
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[0].count, Some(pb::histogram::Count::CountInt(3)));
        assert_eq!(hs[0].schema, -53);
        assert_eq!(hs[0].custom_values, vec![0.5]);
        assert_eq!(hs[0].positive_deltas, vec![1, 1]);
        assert_eq!(hs[0].reset_hint, pb::histogram::ResetHint::Gauge as i32);
        assert_eq!(hs[0].timestamp, 7);
        assert_eq!(
            hs[1].zero_count,
            Some(pb::histogram::ZeroCount::ZeroCountFloat(0.5))
        );
        assert_eq!(hs[1].positive_counts, vec![1.0, 2.0]);
        assert_eq!(
            hs[1].positive_spans,
            vec![pb::BucketSpan {
                offset: 0,
                length: 2
            }]
        );
    }

    #[test]
    fn v2_bad_symbol_reference_is_an_error() {
        let request = write_v2::Request {
            symbols: vec!["".into(), "__name__".into()],
            timeseries: vec![write_v2::TimeSeries {
                labels_refs: vec![1, 9],
                ..Default::default()
            }],
        };
        let err = decode(Protocol::V2, &request.encode_to_vec()).expect_err("bad ref");
        assert!(err.to_string().contains("symbol 9"), "{err}");
        let odd = write_v2::Request {
            symbols: vec!["".into(), "a".into()],
            timeseries: vec![write_v2::TimeSeries {
                labels_refs: vec![1],
                ..Default::default()
            }],
        };
        assert!(decode(Protocol::V2, &odd.encode_to_vec()).is_err());
    }
}
