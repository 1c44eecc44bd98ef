//! Runs Prometheus's PromQL test scripts (`tests/promql/testdata/*.test`,
//! the `promqltest` format) against our engine, one runner for the whole
//! corpus as Prometheus's `promql/promqltest/test.go` does.
//!
//! Pass/fail follows `promqltest`: float values compare with a relative
//! tolerance of 1e-6 (NaN equals NaN), labels exactly, order only under
//! `expect ordered`; every instant eval is also run as a range query around
//! its time and, where its expression allows, with its selectors pinned by
//! `@` at several other evaluation times. Native histograms (`{{...}}`)
//! are loaded as histogram samples and compared as `promqltest` does
//! (both sides compacted, counts and sum within the tolerance).
//!
//! Because the engine is young, the test asserts a ratchet: for each
//! required file, at least the number of passing evals recorded in
//! `tests/promql/baseline.txt`. Set `STRATA_PROMQL_VERBOSE=1` to print every
//! failing eval.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::FutureExt;
use regex::Regex;
use strata::model::histogram::{CounterResetHint, FloatHistogram, Span};
use strata::model::{HPoint, Labels, Matcher, STALE_NAN_BITS, Sample};
use strata::promql::{
    Engine, EngineConfig, InstantSample, QueryError, QueryResult, Queryable, SeriesSamples, Value,
};

/// Files whose evals the ratchet holds; the others are reported only.
const REQUIRED: &[&str] = &[
    "aggregators",
    "at_modifier",
    "collision",
    "functions",
    "histograms",
    "limit",
    "literals",
    "name_label_dropping",
    "native_histograms",
    "operators",
    "range_queries",
    "selectors",
    "staleness",
    "subquery",
    "trig_functions",
    "type_and_unit",
];

/// `promqltest`'s `defaultEpsilon`: the relative error allowed for values.
const EPSILON: f64 = 1e-6;

// ---------------------------------------------------------------------------
// The script format.
// ---------------------------------------------------------------------------

/// One value of a series description (`1+2x3`, `_`, `stale`, `{{...}}`).
#[derive(Clone, Debug, PartialEq)]
enum SeqValue {
    Float(f64),
    Omitted,
    /// A native histogram.
    Histogram(Box<FloatHistogram>),
}

/// How an `expect fail|warn|info` line matches a message.
#[derive(Clone, Debug)]
enum MessageMatch {
    Any,
    Exact(String),
    Regex(Regex),
}

impl MessageMatch {
    fn matches(&self, message: &str) -> bool {
        match self {
            MessageMatch::Any => true,
            MessageMatch::Exact(m) => m == message,
            MessageMatch::Regex(r) => r.is_match(message),
        }
    }
}

impl std::fmt::Display for MessageMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageMatch::Any => f.write_str("any"),
            MessageMatch::Exact(m) => write!(f, "{m:?}"),
            MessageMatch::Regex(r) => write!(f, "regex {:?}", r.as_str()),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum ExpectKind {
    Ordered,
    Fail,
    Warn,
    NoWarn,
    Info,
    NoInfo,
}

#[derive(Clone, Debug, PartialEq)]
enum EvalKind {
    Instant { at: i64 },
    Range { start: i64, end: i64, step: i64 },
}

/// An expected series: its position among the expected lines (from 1) and
/// its values, one per step.
#[derive(Clone, Debug)]
struct ExpectedSeries {
    labels: Labels,
    pos: usize,
    values: Vec<SeqValue>,
}

#[derive(Clone, Debug)]
struct Eval {
    line: usize,
    expr: String,
    kind: EvalKind,
    fail: Option<MessageMatch>,
    ordered: bool,
    /// Legacy `eval_warn` / `eval_info`: at least one annotation of the kind.
    any_warn: bool,
    any_info: bool,
    warn: Vec<MessageMatch>,
    info: Vec<MessageMatch>,
    no_warn: bool,
    no_info: bool,
    scalar: Option<SeqValue>,
    series: Vec<ExpectedSeries>,
    string: String,
    /// `expect range vector from .. to .. step ..`: (start, end, step).
    range_vector: Option<(i64, i64, i64)>,
    exclude_from_range_query: bool,
}

impl Eval {
    fn new(line: usize, expr: String, kind: EvalKind) -> Eval {
        Eval {
            line,
            expr,
            kind,
            fail: None,
            ordered: false,
            any_warn: false,
            any_info: false,
            warn: Vec::new(),
            info: Vec::new(),
            no_warn: false,
            no_info: false,
            scalar: None,
            series: Vec::new(),
            string: String::new(),
            range_vector: None,
            exclude_from_range_query: false,
        }
    }

    fn expects_histogram(&self) -> bool {
        let hist = |v: &SeqValue| matches!(v, SeqValue::Histogram(_));
        self.scalar.iter().any(hist) || self.series.iter().any(|s| s.values.iter().any(hist))
    }

    fn add_expect(&mut self, kind: ExpectKind, m: MessageMatch) -> Result<(), String> {
        match kind {
            ExpectKind::Ordered => self.ordered = true,
            ExpectKind::Fail => {
                if self.fail.is_some() {
                    return Err("multiple expect fail lines are not allowed".into());
                }
                self.fail = Some(m);
            }
            ExpectKind::Warn => self.warn.push(m),
            ExpectKind::NoWarn => self.no_warn = true,
            ExpectKind::Info => self.info.push(m),
            ExpectKind::NoInfo => self.no_info = true,
        }
        if !self.warn.is_empty() && self.no_warn {
            return Err("warn and no_warn cannot be used together".into());
        }
        if !self.info.is_empty() && self.no_info {
            return Err("info and no_info cannot be used together".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct LoadedSeries {
    labels: Labels,
    values: Vec<SeqValue>,
}

#[derive(Clone, Debug)]
enum Command {
    Clear,
    Load {
        interval: i64,
        /// `load_with_nhcb`: classic histograms also become native ones.
        with_nhcb: bool,
        series: Vec<LoadedSeries>,
    },
    Eval(Box<Eval>),
}

/// A parsed script: its commands and the lines that could not be parsed.
#[derive(Debug, Default)]
struct Script {
    commands: Vec<Command>,
    /// (1-based line, message); each is an eval (or load) we cannot run.
    errors: Vec<(usize, String)>,
}

static PAT_LOAD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^load(?:_(with_nhcb))?\s+(.+?)$").expect("valid regex"));
static PAT_EVAL_INSTANT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^eval(?:_(fail|warn|ordered|info))?\s+instant\s+(?:at\s+(.+?))?\s+(.+)$")
        .expect("valid regex")
});
static PAT_EVAL_RANGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^eval(?:_(fail|warn|info))?\s+range\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+?)\s+(.+)$",
    )
    .expect("valid regex")
});
static PAT_EXPECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^expect\s+(ordered|fail|warn|no_warn|info|no_info)(?:\s+(regex|msg):(.+))?$")
        .expect("valid regex")
});
static PAT_EXPECT_RANGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^expect range vector\s+from\s+(.+)\s+to\s+(.+)\s+step\s+(.+)$")
        .expect("valid regex")
});
static PAT_DURATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?$",
    )
    .expect("valid regex")
});
/// Functions whose result depends on the query context: `promqltest` does
/// not re-run such instant evals as range queries.
static PAT_QUERY_CONTEXT_FUNCS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(start|end|range|step)\(\)").expect("valid regex"));

/// A Prometheus duration (`model.ParseDuration`: `1h30m`, `10s53ms`, `0`)
/// in milliseconds.
fn parse_duration(s: &str) -> Result<i64, String> {
    if s == "0" {
        return Ok(0);
    }
    let caps = PAT_DURATION
        .captures(s)
        .filter(|_| !s.is_empty())
        .ok_or_else(|| format!("not a valid duration string: {s:?}"))?;
    const UNITS: [i64; 7] = [
        365 * 24 * 3_600_000,
        7 * 24 * 3_600_000,
        24 * 3_600_000,
        3_600_000,
        60_000,
        1_000,
        1,
    ];
    let mut ms: i64 = 0;
    for (i, unit) in UNITS.iter().enumerate() {
        if let Some(m) = caps.get(i + 1) {
            let n: i64 = m
                .as_str()
                .parse()
                .map_err(|_| format!("duration out of range: {s:?}"))?;
            ms = n
                .checked_mul(*unit)
                .and_then(|v| ms.checked_add(v))
                .ok_or_else(|| format!("duration out of range: {s:?}"))?;
        }
    }
    Ok(ms)
}

/// Go's `strconv.ParseInt(s, 0, 64)` then `strconv.ParseFloat(s, 64)`: the
/// test for a scalar expectation.
fn parse_number(s: &str) -> Option<f64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let int = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        i64::from_str_radix(oct, 8).ok()
    } else if let Some(bin) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        i64::from_str_radix(bin, 2).ok()
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8).ok()
    } else {
        None
    };
    if let Some(n) = int {
        let v = n as f64;
        return Some(if neg { -v } else { v });
    }
    let lower = s.to_ascii_lowercase();
    let lower = lower.trim_start_matches(['+', '-']);
    let word = matches!(lower, "inf" | "infinity" | "nan");
    let numeric = !lower.is_empty()
        && lower
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'+' | b'-'));
    if !(word || numeric) {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Unquotes a Go string literal (`"..."`, `'...'` or a raw `` `...` ``) at
/// the start of `s`; returns the value and the rest of `s`.
fn unquote_prefix(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let quote = match chars.next() {
        Some((_, q @ ('"' | '\'' | '`'))) => q,
        _ => return Err(format!("expected a quoted string at {s:?}")),
    };
    let mut out = String::new();
    // Bytes of \x and octal escapes, which may form multi-byte UTF-8.
    let mut bytes: Vec<u8> = Vec::new();
    let flush = |bytes: &mut Vec<u8>, out: &mut String| {
        if !bytes.is_empty() {
            out.push_str(&String::from_utf8_lossy(bytes));
            bytes.clear();
        }
    };
    while let Some((i, c)) = chars.next() {
        if c == quote {
            flush(&mut bytes, &mut out);
            return Ok((out, &s[i + c.len_utf8()..]));
        }
        if c != '\\' || quote == '`' {
            flush(&mut bytes, &mut out);
            out.push(c);
            continue;
        }
        let (_, e) = chars.next().ok_or("unterminated escape")?;
        let mut take_hex = |n: usize| -> Result<u32, String> {
            let mut v = 0u32;
            for _ in 0..n {
                let (_, h) = chars.next().ok_or("short escape")?;
                v = v * 16
                    + h.to_digit(16)
                        .ok_or_else(|| format!("bad hex digit {h:?}"))?;
            }
            Ok(v)
        };
        match e {
            'x' => {
                let v = take_hex(2)?;
                bytes.push(v as u8);
                continue;
            }
            'u' | 'U' => {
                let v = take_hex(if e == 'u' { 4 } else { 8 })?;
                flush(&mut bytes, &mut out);
                out.push(char::from_u32(v).ok_or("invalid code point")?);
                continue;
            }
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    let (_, d) = chars.next().ok_or("short octal escape")?;
                    v = v * 8 + d.to_digit(8).ok_or("bad octal digit")?;
                }
                bytes.push(v as u8);
                continue;
            }
            _ => {}
        }
        flush(&mut bytes, &mut out);
        out.push(match e {
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\x0b',
            '\\' => '\\',
            '"' | '\'' if e == quote => e,
            _ => return Err(format!("unknown escape \\{e}")),
        });
    }
    Err(format!("unterminated string {s:?}"))
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses the series part of a description: `name`, `name{a="b",...}` or
/// `{__name__="name",...}` (names may also be quoted, as in Prometheus 3).
/// Returns the labels and the rest of the line.
fn parse_metric(s: &str) -> Result<(Labels, &str), String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let name_len = s
        .char_indices()
        .find(|&(i, c)| {
            !(if i == 0 {
                is_name_start(c)
            } else {
                is_name_char(c)
            })
        })
        .map_or(s.len(), |(i, _)| i);
    if name_len > 0 {
        pairs.push(("__name__".into(), s[..name_len].to_string()));
    }
    let mut rest = &s[name_len..];
    if let Some(body) = rest.strip_prefix('{') {
        rest = body;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (name, after) = if rest.starts_with(['"', '\'', '`']) {
                unquote_prefix(rest)?
            } else {
                let len = rest
                    .char_indices()
                    .find(|&(i, c)| {
                        !(if i == 0 {
                            c.is_ascii_alphabetic() || c == '_'
                        } else {
                            c.is_ascii_alphanumeric() || c == '_'
                        })
                    })
                    .map_or(rest.len(), |(i, _)| i);
                if len == 0 {
                    return Err(format!("expected a label name at {rest:?}"));
                }
                (rest[..len].to_string(), &rest[len..])
            };
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix('=') {
                if after.starts_with('~') {
                    return Err("only = matchers are allowed in series descriptions".into());
                }
                let (value, after) = unquote_prefix(after.trim_start())?;
                pairs.push((name, value));
                rest = after;
            } else {
                // A quoted name alone is the metric name.
                pairs.push(("__name__".into(), name));
            }
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err(format!("expected , or }} at {rest:?}"));
            }
        }
    }
    if name_len == 0 && !s.starts_with('{') {
        return Err(format!("expected a series at {s:?}"));
    }
    let mut names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("duplicate label name in {s:?}"));
    }
    Ok((Labels::from_pairs(pairs), rest))
}

/// The length of an unsigned number literal at the start of `s` (digits,
/// a point, an exponent; hex is not allowed in series descriptions), or of
/// `Inf`/`NaN`/`stale`; 0 if none.
fn number_len(s: &str) -> usize {
    let b = s.as_bytes();
    for word in ["infinity", "inf", "nan", "stale"] {
        if b.len() >= word.len() && b[..word.len()].eq_ignore_ascii_case(word.as_bytes()) {
            return word.len();
        }
    }
    let mut i = 0;
    let mut digits = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return 0;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > start {
            i = j;
        }
    }
    i
}

/// A signed number or `stale` at the start of `s`; returns it and its length.
fn take_value(s: &str, allow_stale: bool) -> Result<(f64, usize), String> {
    let (sign, body) = match s.as_bytes().first() {
        Some(b'-') => (-1.0, &s[1..]),
        Some(b'+') => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    let len = number_len(body);
    if len == 0 {
        return Err(format!("expected a number at {s:?}"));
    }
    let text = &body[..len];
    let lower = text.to_ascii_lowercase();
    let v = match lower.as_str() {
        "stale" if allow_stale && sign > 0.0 && body.len() == s.len() => {
            f64::from_bits(STALE_NAN_BITS)
        }
        "stale" => return Err("stale cannot be signed or used as an increment".into()),
        "inf" | "infinity" => f64::INFINITY,
        "nan" => f64::NAN,
        _ => text
            .parse::<f64>()
            .map_err(|e| format!("bad number {text:?}: {e}"))?,
    };
    // Multiplying would quiet the staleness marker's signalling NaN.
    let v = if sign < 0.0 { -v } else { v };
    Ok((v, s.len() - body.len() + len))
}

/// `x<uint>` at the start of `s`: the count and the length taken.
fn take_times(s: &str) -> Result<Option<(u64, usize)>, String> {
    let Some(rest) = s.strip_prefix('x') else {
        return Ok(None);
    };
    let len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 {
        return Err(format!("expected a count after x in {s:?}"));
    }
    let n = rest[..len]
        .parse::<u64>()
        .map_err(|e| format!("bad count: {e}"))?;
    Ok(Some((n, len + 1)))
}

/// Skips a `{{...}}` native histogram at the start of `s`; returns its length.
fn histogram_len(s: &str) -> Result<usize, String> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.checked_sub(1).ok_or("unbalanced }")?;
                if depth == 0 {
                    if !s[..=i].ends_with("}}") {
                        return Err("a histogram ends with }}".into());
                    }
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
    }
    Err(format!("unterminated histogram {s:?}"))
}

/// A `{{schema:1 sum:5 count:4 buckets:[1 2 1] offset:0 ...}}` histogram
/// (Prometheus's series-description notation: one span per side).
fn parse_histogram(s: &str) -> Result<FloatHistogram, String> {
    let body = s
        .strip_prefix("{{")
        .and_then(|b| b.strip_suffix("}}"))
        .ok_or_else(|| format!("bad histogram {s:?}"))?;
    let mut h = FloatHistogram::default();
    let (mut offset, mut n_offset) = (0i32, 0i32);
    let mut rest = body.trim();
    let number = |v: &str| -> Result<f64, String> {
        let (f, len) = take_value(v, true)?;
        if len != v.len() {
            return Err(format!("bad number {v:?} in histogram {s:?}"));
        }
        Ok(f)
    };
    while !rest.is_empty() {
        let colon = rest
            .find(':')
            .ok_or_else(|| format!("bad histogram {s:?}"))?;
        let key = rest[..colon].trim();
        let after = rest[colon + 1..].trim_start();
        let (value, next) = if after.starts_with('[') {
            let end = after
                .find(']')
                .ok_or_else(|| format!("unclosed list in {s:?}"))?;
            (&after[..=end], &after[end + 1..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        rest = next.trim_start();
        let list = |v: &str| -> Result<Vec<f64>, String> {
            v.trim_start_matches('[')
                .trim_end_matches(']')
                .split_whitespace()
                .map(number)
                .collect()
        };
        match key {
            "schema" => h.schema = number(value)? as i32,
            "sum" => h.sum = number(value)?,
            "count" => h.count = number(value)?,
            "z_bucket" => h.zero_count = number(value)?,
            "z_bucket_w" => h.zero_threshold = number(value)?,
            "buckets" => h.positive_buckets = list(value)?,
            "n_buckets" => h.negative_buckets = list(value)?,
            "offset" => offset = number(value)? as i32,
            "n_offset" => n_offset = number(value)? as i32,
            "custom_values" => h.custom_values = list(value)?,
            "counter_reset_hint" => {
                h.counter_reset_hint = match value {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::CounterReset,
                    "not_reset" => CounterResetHint::NotCounterReset,
                    "gauge" => CounterResetHint::Gauge,
                    _ => return Err(format!("bad counter_reset_hint {value:?}")),
                }
            }
            _ => return Err(format!("unknown histogram field {key:?} in {s:?}")),
        }
    }
    let span = |offset: i32, n: usize| {
        if n == 0 {
            Vec::new()
        } else {
            vec![Span {
                offset,
                length: n as u32,
            }]
        }
    };
    h.positive_spans = span(offset, h.positive_buckets.len());
    h.negative_spans = span(n_offset, h.negative_buckets.len());
    Ok(h)
}

/// Expands the values of a series description: `1+2x3` = 1 3 5 7,
/// `1-1x2` = 1 0 -1, `5x2` = 5 5 5, `_` = no sample, `_x3` = three of them,
/// `stale`, `Inf`, `NaN`, `{{...}}` (a native histogram, `{{..}}x2`,
/// `{{..}}+{{..}}x2`).
fn parse_values(s: &str) -> Result<Vec<SeqValue>, String> {
    const MAX_VALUES: u64 = 1_000_000;
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let item_end = if rest.starts_with("{{") {
            // Histograms hold spaces: find the item's end by brace matching.
            let mut len = histogram_len(rest)?;
            while rest[len..].starts_with("+{{") || rest[len..].starts_with("-{{") {
                len += 1 + histogram_len(&rest[len + 1..])?;
            }
            len + rest[len..]
                .find(char::is_whitespace)
                .unwrap_or(rest.len() - len)
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        let item = &rest[..item_end];
        rest = rest[item_end..].trim_start();

        if item.starts_with("{{") {
            let mut len = histogram_len(item)?;
            let first = parse_histogram(&item[..len])?;
            let mut increment: Option<(f64, FloatHistogram)> = None;
            if item[len..].starts_with("+{{") || item[len..].starts_with("-{{") {
                let sign = if item[len..].starts_with('-') {
                    -1.0
                } else {
                    1.0
                };
                let l = histogram_len(&item[len + 1..])?;
                increment = Some((sign, parse_histogram(&item[len + 1..len + 1 + l])?));
                len += 1 + l;
            }
            let n = match take_times(&item[len..])? {
                Some((n, l)) if len + l == item.len() => n + 1,
                None if len == item.len() && increment.is_none() => 1,
                _ => return Err(format!("bad histogram item {item:?}")),
            };
            if n > MAX_VALUES {
                return Err(format!("too many values in {item:?}"));
            }
            let mut h = first;
            for _ in 0..n {
                out.push(SeqValue::Histogram(Box::new(h.clone())));
                if let Some((sign, inc)) = &increment {
                    let hint = h.counter_reset_hint;
                    let r = if *sign > 0.0 { h.add(inc) } else { h.sub(inc) };
                    r.map_err(|e| format!("bad histogram series {item:?}: {e}"))?;
                    h.counter_reset_hint = hint;
                }
            }
            continue;
        }
        if let Some(after) = item.strip_prefix('_') {
            let n = match take_times(after)? {
                Some((n, l)) if l == after.len() => n,
                None if after.is_empty() => 1,
                _ => return Err(format!("bad item {item:?}")),
            };
            if n > MAX_VALUES {
                return Err(format!("too many values in {item:?}"));
            }
            out.extend(std::iter::repeat_n(SeqValue::Omitted, n as usize));
            continue;
        }
        let (first, mut pos) = take_value(item, true)?;
        let mut delta = 0.0;
        let mut needs_times = false;
        if item[pos..].starts_with(['+', '-']) {
            let (d, l) = take_value(&item[pos..], false)?;
            delta = d;
            pos += l;
            needs_times = true;
        }
        match take_times(&item[pos..])? {
            Some((n, l)) if pos + l == item.len() => {
                if n >= MAX_VALUES {
                    return Err(format!("too many values in {item:?}"));
                }
                let mut v = first;
                for _ in 0..=n {
                    out.push(SeqValue::Float(v));
                    if needs_times {
                        v += delta;
                    }
                }
            }
            None if pos == item.len() && !needs_times => out.push(SeqValue::Float(first)),
            _ => return Err(format!("bad item {item:?}")),
        }
    }
    Ok(out)
}

/// A series description line: `<series> <values>`.
fn parse_series_line(line: &str) -> Result<(Labels, Vec<SeqValue>), String> {
    let (labels, rest) = parse_metric(line)?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return Err(format!("expected a space after the series in {line:?}"));
    }
    Ok((labels, parse_values(rest)?))
}

/// An `expect` line (trimmed).
fn parse_expect(line: &str) -> Result<(ExpectKind, MessageMatch), String> {
    let caps = PAT_EXPECT.captures(line).ok_or_else(|| {
        format!(
            "invalid expect statement {line:?}, must match `expect <type> <match_type>: <string>`"
        )
    })?;
    let kind = match &caps[1] {
        "ordered" => ExpectKind::Ordered,
        "fail" => ExpectKind::Fail,
        "warn" => ExpectKind::Warn,
        "no_warn" => ExpectKind::NoWarn,
        "info" => ExpectKind::Info,
        _ => ExpectKind::NoInfo,
    };
    let m = match caps.get(2).map(|m| m.as_str()) {
        Some("msg") => MessageMatch::Exact(caps[3].trim().to_string()),
        Some(_) => {
            let pattern = caps[3].trim();
            MessageMatch::Regex(
                Regex::new(pattern).map_err(|e| format!("invalid regex {pattern:?}: {e}"))?,
            )
        }
        None => MessageMatch::Any,
    };
    Ok((kind, m))
}

/// The `eval` header line.
fn parse_eval_header(line: &str, line_no: usize) -> Result<Eval, String> {
    if let Some(c) = PAT_EVAL_INSTANT.captures(line) {
        let at_text = c.get(2).map_or("", |m| m.as_str());
        let at = parse_duration(at_text)
            .map_err(|e| format!("invalid timestamp definition {at_text:?}: {e}"))?;
        let mut eval = Eval::new(line_no, c[3].to_string(), EvalKind::Instant { at });
        match c.get(1).map(|m| m.as_str()) {
            Some("fail") => eval.fail = Some(MessageMatch::Any),
            Some("warn") => eval.any_warn = true,
            Some("info") => eval.any_info = true,
            Some("ordered") => eval.ordered = true,
            _ => {}
        }
        return Ok(eval);
    }
    if let Some(c) = PAT_EVAL_RANGE.captures(line) {
        let start = parse_duration(&c[2])?;
        let end = parse_duration(&c[3])?;
        let step = parse_duration(&c[4])?;
        if end < start {
            return Err("end timestamp is before start timestamp".into());
        }
        let mut eval = Eval::new(
            line_no,
            c[5].to_string(),
            EvalKind::Range { start, end, step },
        );
        match c.get(1).map(|m| m.as_str()) {
            Some("fail") => eval.fail = Some(MessageMatch::Any),
            Some("warn") => eval.any_warn = true,
            Some("info") => eval.any_info = true,
            _ => {}
        }
        return Ok(eval);
    }
    Err(format!("invalid evaluation command {line:?}"))
}

/// One line of an eval's block. Returns whether the block ends here (a
/// scalar expectation or a legacy expected-failure line ends it).
fn parse_eval_line(
    eval: &mut Eval,
    line: &str,
    expected_lines: &mut usize,
) -> Result<bool, String> {
    if eval.fail.is_some() {
        if let Some(msg) = line.strip_prefix("expected_fail_message") {
            eval.fail = Some(MessageMatch::Exact(msg.trim().to_string()));
            return Ok(true);
        }
        if let Some(pattern) = line.strip_prefix("expected_fail_regexp") {
            let re = Regex::new(pattern.trim()).map_err(|e| format!("invalid regexp: {e}"))?;
            eval.fail = Some(MessageMatch::Regex(re));
            return Ok(true);
        }
    }
    if line.starts_with("expect range vector") {
        let c = PAT_EXPECT_RANGE
            .captures(line)
            .ok_or_else(|| format!("invalid range vector definition {line:?}"))?;
        let (start, end, step) = (
            parse_duration(&c[1])?,
            parse_duration(&c[2])?,
            parse_duration(&c[3])?,
        );
        if end < start {
            return Err("end timestamp is before start timestamp".into());
        }
        eval.range_vector = Some((start, end, step));
        eval.exclude_from_range_query = true;
        return Ok(false);
    }
    if line.starts_with("expect string") {
        let quoted = line
            .strip_prefix("expect string ")
            .filter(|s| !s.is_empty())
            .ok_or("expected string literal not valid - a quoted string literal is required")?;
        let (s, rest) = unquote_prefix(quoted)?;
        if !rest.is_empty() || (quoted.starts_with('\'') && s.chars().count() != 1) {
            return Err(format!("expected string literal not valid: {quoted}"));
        }
        eval.string = s;
        eval.exclude_from_range_query = true;
        return Ok(false);
    }
    if line.split(' ').next() == Some("expect") {
        let (kind, m) = parse_expect(line)?;
        return eval.add_expect(kind, m).map(|()| false);
    }
    *expected_lines += 1;
    if let Some(v) = parse_number(line) {
        eval.scalar = Some(SeqValue::Float(v));
        eval.series.clear();
        return Ok(true);
    }
    let (labels, values) = parse_series_line(line)?;
    if values.len() > 1
        && matches!(eval.kind, EvalKind::Instant { .. })
        && eval.range_vector.is_none()
    {
        return Err("expecting multiple values in instant evaluation not allowed".into());
    }
    eval.scalar = None;
    let series = ExpectedSeries {
        labels,
        pos: *expected_lines,
        values,
    };
    match eval.series.iter_mut().find(|s| s.labels == series.labels) {
        Some(existing) => *existing = series,
        None => eval.series.push(series),
    }
    Ok(false)
}

/// Parses a script. Errors are collected, not fatal: the block they occur
/// in is skipped.
fn parse_script(input: &str) -> Script {
    let lines: Vec<&str> = input
        .lines()
        .map(|l| {
            let l = l.trim();
            if l.starts_with('#') { "" } else { l }
        })
        .collect();
    let mut script = Script::default();
    let mut i = 0;
    // Skips to the end of the current block after an error.
    let skip_block = |i: &mut usize| {
        while *i + 1 < lines.len() && !lines[*i + 1].is_empty() {
            *i += 1;
        }
    };
    while i < lines.len() {
        let line = lines[i];
        if line.is_empty() {
            i += 1;
            continue;
        }
        let word = line
            .split([' ', '\t'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if word == "clear" {
            script.commands.push(Command::Clear);
        } else if word.starts_with("load") {
            match parse_load(&lines, &mut i) {
                Ok(cmd) => script.commands.push(cmd),
                Err(e) => {
                    script.errors.push((i + 1, e));
                    skip_block(&mut i);
                }
            }
        } else if word.starts_with("eval") {
            let start = i;
            match parse_eval(&lines, &mut i) {
                Ok(eval) => script.commands.push(Command::Eval(Box::new(eval))),
                Err(e) => {
                    script
                        .errors
                        .push((start + 1, format!("line {}: {e}", i + 1)));
                    skip_block(&mut i);
                }
            }
        } else {
            script
                .errors
                .push((i + 1, format!("invalid command {line:?}")));
            skip_block(&mut i);
        }
        i += 1;
    }
    script
}

/// A `load` block from its header at `*i`; leaves `*i` on its last line.
fn parse_load(lines: &[&str], i: &mut usize) -> Result<Command, String> {
    let c = PAT_LOAD
        .captures(lines[*i])
        .ok_or("invalid load command. (load[_with_nhcb] <step:duration>)")?;
    let with_nhcb = c.get(1).is_some();
    let interval = parse_duration(&c[2])?;
    let mut series: Vec<LoadedSeries> = Vec::new();
    while *i + 1 < lines.len() && !lines[*i + 1].is_empty() {
        *i += 1;
        let line = lines[*i];
        // Start-timestamp lines (`metric@st <offsets>`, `@st <offsets>`):
        // we have no start timestamps; check the metric and skip the line.
        let head = line.split([' ', '\t']).next().unwrap_or_default();
        if let Some(metric) = head.strip_suffix("@st") {
            if !metric.is_empty() {
                parse_metric(metric)?;
            }
            continue;
        }
        let (labels, values) = parse_series_line(line)?;
        match series.iter_mut().find(|s| s.labels == labels) {
            Some(existing) => existing.values = values,
            None => series.push(LoadedSeries { labels, values }),
        }
    }
    Ok(Command::Load {
        interval,
        with_nhcb,
        series,
    })
}

/// An `eval` block from its header at `*i`; leaves `*i` on its last line.
fn parse_eval(lines: &[&str], i: &mut usize) -> Result<Eval, String> {
    let mut eval = parse_eval_header(lines[*i], *i + 1)?;
    let mut expected_lines = 0;
    while *i + 1 < lines.len() && !lines[*i + 1].is_empty() {
        *i += 1;
        if parse_eval_line(&mut eval, lines[*i], &mut expected_lines)? {
            break;
        }
    }
    Ok(eval)
}

// ---------------------------------------------------------------------------
// Storage: the loaded series, in memory.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct MemStorage {
    series: BTreeMap<Labels, Vec<Sample>>,
    histograms: BTreeMap<Labels, Vec<HPoint>>,
    /// Series that hold native histogram samples.
    histogram_series: BTreeSet<Labels>,
}

impl MemStorage {
    fn load(&mut self, interval: i64, with_nhcb: bool, series: &[LoadedSeries]) {
        for s in series {
            if s.values.iter().any(|v| matches!(v, SeqValue::Histogram(_))) {
                self.histogram_series.insert(s.labels.clone());
            }
            // `load_with_nhcb` also stores each classic histogram as a native
            // histogram with custom buckets under its base name.
            if with_nhcb {
                let name = s.labels.metric_name().unwrap_or_default();
                if let Some(base) = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                {
                    let labels = s.labels.without("le").with("__name__", base);
                    self.histogram_series.insert(labels);
                }
            }
            for (i, v) in s.values.iter().enumerate() {
                let t = i as i64 * interval;
                match v {
                    SeqValue::Float(v) => {
                        let samples = self.series.entry(s.labels.clone()).or_default();
                        match samples.binary_search_by_key(&t, |s| s.t) {
                            Ok(at) => samples[at].v = *v,
                            Err(at) => samples.insert(at, Sample { t, v: *v }),
                        }
                    }
                    SeqValue::Histogram(h) => {
                        let points = self.histograms.entry(s.labels.clone()).or_default();
                        let p = HPoint {
                            t,
                            h: (**h).clone(),
                        };
                        match points.binary_search_by_key(&t, |p| p.t) {
                            Ok(at) => points[at] = p,
                            Err(at) => points.insert(at, p),
                        }
                    }
                    SeqValue::Omitted => {}
                }
            }
            if let Some(points) = self.histograms.get_mut(&s.labels) {
                set_reset_hints(points);
            }
        }
        if with_nhcb {
            self.load_nhcb(interval, series);
        }
    }

    /// `load_with_nhcb`: each classic histogram (`_bucket` with `le`,
    /// `_count`, `_sum`) also becomes a native histogram with custom buckets
    /// under its base name, at every timestamp its buckets have a sample.
    fn load_nhcb(&mut self, interval: i64, series: &[LoadedSeries]) {
        #[derive(Default)]
        struct Classic {
            /// (le, value per step)
            buckets: Vec<(f64, Vec<Option<f64>>)>,
            count: Vec<Option<f64>>,
            sum: Vec<Option<f64>>,
        }
        let floats = |values: &[SeqValue]| -> Vec<Option<f64>> {
            values
                .iter()
                .map(|v| match v {
                    SeqValue::Float(f) => Some(*f),
                    _ => None,
                })
                .collect()
        };
        let mut classics: BTreeMap<Labels, Classic> = BTreeMap::new();
        for s in series {
            let name = s.labels.metric_name().unwrap_or_default();
            let (base, kind) = if let Some(b) = name.strip_suffix("_bucket") {
                (b, 0)
            } else if let Some(b) = name.strip_suffix("_count") {
                (b, 1)
            } else if let Some(b) = name.strip_suffix("_sum") {
                (b, 2)
            } else {
                continue;
            };
            let key = s.labels.without("le").with("__name__", base);
            let c = classics.entry(key).or_default();
            match kind {
                0 => {
                    let Some(le) = s.labels.get("le").and_then(|v| v.parse::<f64>().ok()) else {
                        continue;
                    };
                    c.buckets.push((le, floats(&s.values)));
                }
                1 => c.count = floats(&s.values),
                _ => c.sum = floats(&s.values),
            }
        }
        for (labels, mut c) in classics {
            if c.buckets.is_empty() {
                continue;
            }
            c.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let steps = c.buckets.iter().map(|b| b.1.len()).max().unwrap_or(0);
            let mut points = Vec::new();
            for i in 0..steps {
                let cum: Vec<(f64, f64)> = c
                    .buckets
                    .iter()
                    .filter_map(|(le, v)| v.get(i).copied().flatten().map(|x| (*le, x)))
                    .collect();
                if cum.is_empty() || cum.iter().any(|(_, v)| v.to_bits() == STALE_NAN_BITS) {
                    continue;
                }
                let custom_values: Vec<f64> = cum
                    .iter()
                    .map(|(le, _)| *le)
                    .filter(|le| le.is_finite())
                    .collect();
                let mut buckets = Vec::with_capacity(cum.len());
                let mut prev = 0.0;
                for (_, v) in &cum {
                    buckets.push(v - prev);
                    prev = *v;
                }
                if cum.last().is_some_and(|(le, _)| le.is_finite()) {
                    buckets.push(0.0);
                }
                let count = c.count.get(i).copied().flatten().unwrap_or(prev);
                let h = FloatHistogram {
                    schema: -53,
                    count,
                    sum: c.sum.get(i).copied().flatten().unwrap_or(0.0),
                    positive_spans: vec![Span {
                        offset: 0,
                        length: buckets.len() as u32,
                    }],
                    positive_buckets: buckets,
                    custom_values,
                    ..FloatHistogram::default()
                };
                points.push(HPoint {
                    t: i as i64 * interval,
                    h,
                });
            }
            set_reset_hints(&mut points);
            if !points.is_empty() {
                self.histograms.insert(labels, points);
            }
        }
    }
}

/// The counter reset hints Prometheus's TSDB gives histograms it reads
/// back: the first sample of a chunk reads as unknown (prometheus#15346),
/// and a counter reset starts a new chunk, so the first sample and every
/// reset stay as loaded (unknown by default); a later sample of the same
/// chunk is not a reset; gauge histograms stay gauges.
fn set_reset_hints(points: &mut [HPoint]) {
    for i in 1..points.len() {
        let (before, after) = points.split_at_mut(i);
        let (prev, cur) = (&before[i - 1].h, &mut after[0].h);
        if cur.counter_reset_hint != CounterResetHint::Unknown || cur.is_stale_marker() {
            continue;
        }
        if !cur.detect_reset(prev) {
            cur.counter_reset_hint = CounterResetHint::NotCounterReset;
        }
    }
}

impl MemStorage {
    /// Whether a selector of `expr` selects a series with native histogram
    /// samples: then the eval needs native histograms.
    fn selects_histograms(&self, expr: &str) -> bool {
        if self.histogram_series.is_empty() {
            return false;
        }
        let Ok(parsed) = promql_parser::parser::parse(expr) else {
            return false;
        };
        let mut selectors = Vec::new();
        collect_selectors(&parsed, &mut selectors);
        selectors.iter().any(|vs| {
            self.histogram_series
                .iter()
                .any(|labels| selector_matches(vs, labels))
        })
    }
}

fn collect_selectors<'a>(
    expr: &'a promql_parser::parser::Expr,
    out: &mut Vec<&'a promql_parser::parser::VectorSelector>,
) {
    use promql_parser::parser::Expr;
    match expr {
        Expr::Aggregate(a) => {
            collect_selectors(&a.expr, out);
            if let Some(p) = &a.param {
                collect_selectors(p, out);
            }
        }
        Expr::Unary(u) => collect_selectors(&u.expr, out),
        Expr::Binary(b) => {
            collect_selectors(&b.lhs, out);
            collect_selectors(&b.rhs, out);
        }
        Expr::Paren(p) => collect_selectors(&p.expr, out),
        Expr::Subquery(s) => collect_selectors(&s.expr, out),
        Expr::VectorSelector(vs) => out.push(vs),
        Expr::MatrixSelector(ms) => out.push(&ms.vs),
        Expr::Call(c) => c.args.args.iter().for_each(|a| collect_selectors(a, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn selector_matches(vs: &promql_parser::parser::VectorSelector, labels: &Labels) -> bool {
    let value = |name: &str| labels.get(name).unwrap_or_default();
    let all = |ms: &[promql_parser::label::Matcher]| ms.iter().all(|m| m.is_match(value(&m.name)));
    vs.name.as_ref().is_none_or(|n| value("__name__") == n)
        && (vs.matchers.or_matchers.is_empty() && all(&vs.matchers.matchers)
            || vs.matchers.or_matchers.iter().any(|ms| all(ms)))
}

#[async_trait]
impl Queryable for MemStorage {
    async fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesSamples>, String> {
        let matches = |labels: &Labels| {
            matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).unwrap_or_default()))
        };
        let names: BTreeSet<&Labels> = self
            .series
            .keys()
            .chain(self.histograms.keys())
            .filter(|l| matches(l))
            .collect();
        Ok(names
            .into_iter()
            .filter_map(|labels| {
                let samples = self.series.get(labels).map_or(&[][..], Vec::as_slice);
                let from = samples.partition_point(|s| s.t < mint);
                let to = samples.partition_point(|s| s.t <= maxt);
                let hists = self.histograms.get(labels).map_or(&[][..], Vec::as_slice);
                let hfrom = hists.partition_point(|p| p.t < mint);
                let hto = hists.partition_point(|p| p.t <= maxt);
                (from < to || hfrom < hto).then(|| SeriesSamples {
                    histograms: hists[hfrom..hto].to_vec(),
                    labels: labels.clone(),
                    samples: samples[from..to].to_vec(),
                })
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------
// Comparison, as promqltest's compareResult and checkAnnotations.
// ---------------------------------------------------------------------------

/// Prometheus's `util/almost.Equal`.
fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE; // 0x0010000000000000
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

fn expected_float(v: &SeqValue) -> Result<f64, String> {
    match v {
        SeqValue::Float(f) => Ok(*f),
        SeqValue::Omitted => Err("an instant expectation has no value".into()),
        SeqValue::Histogram(h) => Err(format!("expected histogram {}", show_histogram(h))),
    }
}

/// Span lists equal once empty spans are folded into the next one.
fn spans_match(a: &[Span], b: &[Span]) -> bool {
    let norm = |s: &[Span]| {
        let mut out: Vec<Span> = Vec::new();
        let mut carry = 0;
        for sp in s {
            if sp.length == 0 {
                carry += sp.offset;
                continue;
            }
            out.push(Span {
                offset: sp.offset + carry,
                length: sp.length,
            });
            carry = 0;
        }
        out
    };
    norm(a) == norm(b)
}

/// promqltest's `compareNativeHistogram` on compacted histograms.
fn histograms_match(exp: &FloatHistogram, got: &FloatHistogram) -> bool {
    let (e, g) = (exp.clone().compact(0), got.clone().compact(0));
    let floats = |a: &[f64], b: &[f64]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| almost_equal(*x, *y, EPSILON))
    };
    e.schema == g.schema
        && almost_equal(e.count, g.count, EPSILON)
        && almost_equal(e.sum, g.sum, EPSILON)
        && (!e.uses_custom_buckets() || e.custom_values == g.custom_values)
        && e.zero_threshold == g.zero_threshold
        && almost_equal(e.zero_count, g.zero_count, EPSILON)
        && spans_match(&e.negative_spans, &g.negative_spans)
        && floats(&e.negative_buckets, &g.negative_buckets)
        && spans_match(&e.positive_spans, &g.positive_spans)
        && floats(&e.positive_buckets, &g.positive_buckets)
}

fn show_histogram(h: &FloatHistogram) -> String {
    format!(
        "{{{{schema:{} count:{} sum:{} z_bucket:{} z_bucket_w:{} buckets:{:?} spans:{:?} n_buckets:{:?} n_spans:{:?} custom_values:{:?} hint:{:?}}}}}",
        h.schema,
        h.count,
        h.sum,
        h.zero_count,
        h.zero_threshold,
        h.positive_buckets,
        h.positive_spans,
        h.negative_buckets,
        h.negative_spans,
        h.custom_values,
        h.counter_reset_hint
    )
}

/// Compares a result with an eval's expectations. `matrix_range` is the
/// (start, end, step) that the points of an expected matrix fall on.
fn compare_result(
    eval: &Eval,
    value: &Value,
    matrix_range: Option<(i64, i64, i64)>,
) -> Result<(), String> {
    match value {
        Value::Matrix(matrix) => {
            if eval.ordered {
                return Err("expected ordered result, but query returned a matrix".into());
            }
            if eval.scalar.is_some() {
                return Err("expected scalar result, but got a matrix".into());
            }
            if let Some(w) = matrix.windows(2).find(|w| w[0].labels > w[1].labels) {
                return Err(format!(
                    "matrix results should always be sorted by labels, but {} comes before {}",
                    w[0].labels, w[1].labels
                ));
            }
            let (start, end, step) = matrix_range
                .ok_or("got a matrix but no matrix was expected (no `expect range vector`)")?;
            for s in matrix {
                let exp = eval
                    .series
                    .iter()
                    .find(|e| e.labels == s.labels)
                    .ok_or_else(|| format!("unexpected series {} in result", s.labels))?;
                let mut expected = Vec::new();
                let mut expected_h = Vec::new();
                for (i, v) in exp.values.iter().enumerate() {
                    let t = start + i as i64 * step;
                    if t > end {
                        return Err(format!(
                            "expected {} points for {}, but the time range cannot return this many",
                            exp.values.len(),
                            exp.labels
                        ));
                    }
                    match v {
                        SeqValue::Float(f) => expected.push((t, *f)),
                        SeqValue::Omitted => {}
                        SeqValue::Histogram(h) => expected_h.push((t, h)),
                    }
                }
                if expected_h.len() != s.histograms.len() {
                    return Err(format!(
                        "expected {} histogram points for {}, but got {}",
                        expected_h.len(),
                        s.labels,
                        s.histograms.len()
                    ));
                }
                for ((t, h), got) in expected_h.iter().zip(&s.histograms) {
                    if *t != got.t || !histograms_match(h, &got.h) {
                        return Err(format!(
                            "expected {} at t={t} for {}, got {} at t={}",
                            show_histogram(h),
                            s.labels,
                            show_histogram(&got.h),
                            got.t
                        ));
                    }
                }
                if expected.len() != s.samples.len() {
                    return Err(format!(
                        "expected {} points for {}, but got {}: {}",
                        expected.len(),
                        s.labels,
                        s.samples.len(),
                        format_samples(&s.samples)
                    ));
                }
                for ((t, v), got) in expected.iter().zip(&s.samples) {
                    if *t != got.t {
                        return Err(format!(
                            "expected a point at t={t} for {}, got t={} ({})",
                            s.labels,
                            got.t,
                            format_samples(&s.samples)
                        ));
                    }
                    if !almost_equal(got.v, *v, EPSILON) {
                        return Err(format!(
                            "expected {v} at t={t} for {}, got {} ({})",
                            s.labels,
                            got.v,
                            format_samples(&s.samples)
                        ));
                    }
                }
            }
            if let Some(missing) = eval
                .series
                .iter()
                .find(|e| !matrix.iter().any(|s| s.labels == e.labels))
            {
                return Err(format!("expected series {} not found", missing.labels));
            }
        }
        Value::Vector(vector) => {
            if eval.scalar.is_some() {
                return Err("expected scalar result, but got a vector".into());
            }
            for (pos, sample) in vector.iter().enumerate() {
                let exp = eval
                    .series
                    .iter()
                    .find(|e| e.labels == sample.labels)
                    .ok_or_else(|| {
                        format!(
                            "unexpected series {} in result, has value {}",
                            sample.labels, sample.v
                        )
                    })?;
                if eval.ordered && exp.pos != pos + 1 {
                    return Err(format!(
                        "expected {} at position {} but was at {}",
                        sample.labels,
                        exp.pos,
                        pos + 1
                    ));
                }
                let want = exp
                    .values
                    .first()
                    .ok_or("an expected series has no value")?;
                match (want, &sample.h) {
                    (SeqValue::Histogram(h), Some(got)) => {
                        if !histograms_match(h, got) {
                            return Err(format!(
                                "expected {} for {} but got {}",
                                show_histogram(h),
                                sample.labels,
                                show_histogram(got)
                            ));
                        }
                        continue;
                    }
                    (_, Some(got)) => {
                        return Err(format!(
                            "expected a float for {} but got histogram {}",
                            sample.labels,
                            show_histogram(got)
                        ));
                    }
                    _ => {}
                }
                let want = expected_float(want)?;
                if !almost_equal(want, sample.v, EPSILON) {
                    return Err(format!(
                        "expected {want} for {} but got {}",
                        sample.labels, sample.v
                    ));
                }
            }
            if let Some(missing) = eval
                .series
                .iter()
                .find(|e| !vector.iter().any(|s| s.labels == e.labels))
            {
                return Err(format!("expected series {} not found", missing.labels));
            }
        }
        Value::Scalar { v, .. } => {
            let want = eval
                .scalar
                .as_ref()
                .ok_or_else(|| format!("expected a vector or matrix, but got scalar {v}"))?;
            let want = expected_float(want)?;
            if !almost_equal(want, *v, EPSILON) {
                return Err(format!("expected scalar {want} but got {v}"));
            }
        }
        Value::String { s, .. } => {
            if *s != eval.string {
                return Err(format!("expected string {:?} but got {s:?}", eval.string));
            }
        }
    }
    Ok(())
}

/// Checks warnings and infos against `expect warn|info|no_warn|no_info`.
fn check_annotations(eval: &Eval, warnings: &[String], infos: &[String]) -> Result<(), String> {
    if eval.any_warn && warnings.is_empty() {
        return Err("expected warnings but got none".into());
    }
    if eval.any_info && infos.is_empty() {
        return Err("expected info annotations but got none".into());
    }
    for (kind, expected, actual) in [("warn", &eval.warn, warnings), ("info", &eval.info, infos)] {
        if expected.is_empty() {
            continue;
        }
        if actual.is_empty() {
            return Err(format!("expected {kind} annotations but none were found"));
        }
        if let Some(e) = expected
            .iter()
            .find(|e| !actual.iter().any(|a| e.matches(a)))
        {
            return Err(format!(
                "expected {kind} annotation matching {e}, found: {actual:?}"
            ));
        }
        if let Some(a) = actual
            .iter()
            .find(|a| !expected.iter().any(|e| e.matches(a)))
        {
            return Err(format!("unexpected {kind} annotation {a:?}"));
        }
    }
    if eval.no_warn && !warnings.is_empty() {
        return Err(format!("unexpected warnings: {warnings:?}"));
    }
    if eval.no_info && !infos.is_empty() {
        return Err(format!("unexpected infos: {infos:?}"));
    }
    Ok(())
}

fn format_samples(samples: &[Sample]) -> String {
    let mut out = String::new();
    for (i, s) in samples.iter().enumerate() {
        if i == 8 {
            let _ = write!(out, " ... ({} points)", samples.len());
            break;
        }
        let _ = write!(out, "{}{}@{}", if i > 0 { " " } else { "" }, s.v, s.t);
    }
    out
}

fn format_value(value: &Value) -> String {
    const MAX_SERIES: usize = 20;
    match value {
        Value::Scalar { t, v } => format!("scalar {v} @{t}"),
        Value::String { t, s } => format!("string {s:?} @{t}"),
        Value::Vector(v) => {
            let mut out = format!("vector of {}:", v.len());
            for s in v.iter().take(MAX_SERIES) {
                match &s.h {
                    Some(h) => {
                        let _ = write!(out, "\n      {} {} @{}", s.labels, show_histogram(h), s.t);
                    }
                    None => {
                        let _ = write!(out, "\n      {} {} @{}", s.labels, s.v, s.t);
                    }
                }
            }
            out
        }
        Value::Matrix(m) => {
            let mut out = format!("matrix of {}:", m.len());
            for s in m.iter().take(MAX_SERIES) {
                let _ = write!(out, "\n      {} [{}]", s.labels, format_samples(&s.samples));
            }
            out
        }
    }
}

fn format_expected(eval: &Eval) -> String {
    if let Some(fail) = &eval.fail {
        return format!("failure ({fail})");
    }
    let show = |v: &SeqValue| match v {
        SeqValue::Float(f) => f.to_string(),
        SeqValue::Omitted => "_".into(),
        SeqValue::Histogram(h) => show_histogram(h),
    };
    if let Some(v) = &eval.scalar {
        return format!("scalar {}", show(v));
    }
    if !eval.string.is_empty() {
        return format!("string {:?}", eval.string);
    }
    let mut out = format!("{} series:", eval.series.len());
    for s in &eval.series {
        let values: Vec<String> = s.values.iter().map(show).collect();
        let _ = write!(out, "\n      {} {}", s.labels, values.join(" "));
    }
    out
}

// ---------------------------------------------------------------------------
// Running evals.
// ---------------------------------------------------------------------------

/// Functions whose result varies with the evaluation time even when their
/// arguments do not (Prometheus's `AtModifierUnsafeFunctions`).
const AT_MODIFIER_UNSAFE_FUNCTIONS: &[&str] = &[
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "time",
    "timestamp",
    // The query-context functions: at `t` they give `t` whatever the
    // pinned selectors (promqltest leaves them out of range mode too).
    "start",
    "end",
    "range",
    "step",
];

/// Sets `@ at` on every selector and subquery not inside a subquery that
/// already has one; returns false if the expression holds an
/// at-modifier-unsafe function (then no variants are run).
fn pin_at(expr: &mut promql_parser::parser::Expr, at: SystemTime) -> bool {
    use promql_parser::parser::{AtModifier, Expr};
    match expr {
        Expr::Aggregate(a) => {
            let param_ok = a.param.as_mut().is_none_or(|p| pin_at(p, at));
            pin_at(&mut a.expr, at) && param_ok
        }
        Expr::Unary(u) => pin_at(&mut u.expr, at),
        Expr::Binary(b) => {
            let lhs = pin_at(&mut b.lhs, at);
            pin_at(&mut b.rhs, at) && lhs
        }
        Expr::Paren(p) => pin_at(&mut p.expr, at),
        Expr::Subquery(s) => {
            if s.at.is_none() {
                s.at = Some(AtModifier::At(at));
            }
            true
        }
        Expr::VectorSelector(vs) => {
            if vs.at.is_none() {
                vs.at = Some(AtModifier::At(at));
            }
            true
        }
        Expr::MatrixSelector(ms) => {
            if ms.vs.at.is_none() {
                ms.vs.at = Some(AtModifier::At(at));
            }
            true
        }
        Expr::Call(c) => {
            let mut ok = !AT_MODIFIER_UNSAFE_FUNCTIONS.contains(&c.func.name);
            for arg in &mut c.args.args {
                ok &= pin_at(arg, at);
            }
            ok
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => true,
    }
}

/// promqltest's extra instant queries: the expression with its selectors
/// pinned at the eval time, run at other times. Left out when our parser
/// cannot print the expression back faithfully.
fn at_modifier_variants(expr: &str, at: i64) -> Vec<(String, i64)> {
    use promql_parser::parser::parse;
    let Ok(parsed) = parse(expr) else {
        return Vec::new();
    };
    if parse(&parsed.to_string()).ok().as_ref() != Some(&parsed) {
        return Vec::new();
    }
    let Ok(at_ms) = u64::try_from(at) else {
        return Vec::new();
    };
    let mut pinned = parsed;
    if !pin_at(
        &mut pinned,
        SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms),
    ) {
        return Vec::new();
    }
    let text = pinned.to_string();
    if parse(&text).is_err() {
        return Vec::new();
    }
    let times = if at == 0 {
        vec![-1000, 0, 1000]
    } else {
        vec![-10 * at, 0, at / 5, at, 10 * at]
    };
    times.into_iter().map(|t| (text.clone(), t)).collect()
}

thread_local! {
    /// Set while the engine runs, so that its panics are recorded quietly.
    static IN_ENGINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_ENGINE.with(|f| f.get()) {
                previous(info);
            }
        }));
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Marks the failure of an eval that expects a native histogram or selects
/// a series holding them.
const NEEDS_HISTOGRAMS: &str = "involves native histograms";

/// What the engine gave: a result, or an error message (engine errors and
/// panics alike).
type Outcome = Result<(Value, Vec<String>, Vec<String>), String>;

struct Runner {
    engine: Engine,
    storage: MemStorage,
}

impl Runner {
    async fn guarded<F>(fut: F) -> Outcome
    where
        F: std::future::Future<Output = Result<QueryResult, QueryError>>,
    {
        IN_ENGINE.with(|f| f.set(true));
        let out = std::panic::AssertUnwindSafe(fut).catch_unwind().await;
        IN_ENGINE.with(|f| f.set(false));
        match out {
            Ok(Ok(r)) => Ok((
                r.value,
                r.warnings.iter().map(|w| w.to_string()).collect(),
                r.infos.iter().map(|i| i.to_string()).collect(),
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(format!("engine panicked: {}", panic_message(&*panic))),
        }
    }

    async fn instant(&self, expr: &str, t: i64) -> Outcome {
        Self::guarded(self.engine.instant(&self.storage, expr, t)).await
    }

    async fn range(&self, expr: &str, start: i64, end: i64, step: i64) -> Outcome {
        Self::guarded(self.engine.range(&self.storage, expr, start, end, step)).await
    }

    /// Runs one eval; `Err` says why it failed, starting with
    /// [`NEEDS_HISTOGRAMS`] when native histograms are involved.
    async fn run_eval(&self, eval: &Eval) -> Result<(), String> {
        self.run_eval_floats(eval).await.map_err(|e| {
            if eval.expects_histogram() {
                format!("{NEEDS_HISTOGRAMS}: expects a native histogram\n    {e}")
            } else if self.storage.selects_histograms(&eval.expr) {
                format!("{NEEDS_HISTOGRAMS}: selects series with native histograms\n    {e}")
            } else {
                e
            }
        })
    }

    async fn run_eval_floats(&self, eval: &Eval) -> Result<(), String> {
        match eval.kind {
            EvalKind::Range { start, end, step } => {
                let outcome = self.range(&eval.expr, start, end, step).await;
                self.check(eval, outcome, Some((start, end, step)))
            }
            EvalKind::Instant { at } => {
                let mut queries = vec![(eval.expr.clone(), at)];
                queries.extend(at_modifier_variants(&eval.expr, at));
                for (expr, t) in queries {
                    let pinned = expr != eval.expr;
                    let context = |e: String| {
                        if pinned {
                            format!("{e}\n    (as {expr} at {t}ms)")
                        } else {
                            e
                        }
                    };
                    self.run_instant(eval, &expr, t).await.map_err(context)?;
                }
                Ok(())
            }
        }
    }

    /// promqltest's `runInstantQuery`: the instant query, then the same
    /// expression as a range query around `t`, whose middle step must match.
    async fn run_instant(&self, eval: &Eval, expr: &str, t: i64) -> Result<(), String> {
        let outcome = self.instant(expr, t).await;
        let was_scalar = matches!(outcome, Ok((Value::Scalar { .. }, _, _)));
        self.check(eval, outcome, eval.range_vector)?;
        if eval.fail.is_some()
            || eval.exclude_from_range_query
            || PAT_QUERY_CONTEXT_FUNCS.is_match(expr)
        {
            return Ok(());
        }
        let (value, _, _) = self
            .range(expr, t - 60_000, t + 60_000, 60_000)
            .await
            .map_err(|e| format!("error in range mode: {e}"))?;
        if eval.ordered {
            return Ok(());
        }
        let Value::Matrix(matrix) = value else {
            return Err(format!(
                "range mode: expected a matrix, got {}",
                format_value(&value)
            ));
        };
        if let Some(w) = matrix.windows(2).find(|w| w[0].labels > w[1].labels) {
            return Err(format!(
                "range mode: matrix not sorted by labels: {} before {}",
                w[0].labels, w[1].labels
            ));
        }
        let vector: Vec<InstantSample> = matrix
            .iter()
            .filter_map(|s| {
                if let Some(p) = s.histograms.iter().find(|p| p.t == t) {
                    return Some(InstantSample {
                        labels: s.labels.clone(),
                        t: p.t,
                        v: 0.0,
                        h: Some(p.h.clone()),
                    });
                }
                s.samples.iter().find(|p| p.t == t).map(|p| InstantSample {
                    labels: s.labels.clone(),
                    t: p.t,
                    v: p.v,
                    h: None,
                })
            })
            .collect();
        let value = if was_scalar {
            let first = vector
                .first()
                .ok_or("range mode: no point at the eval time for a scalar")?;
            Value::Scalar { t, v: first.v }
        } else {
            Value::Vector(vector)
        };
        compare_result(eval, &value, None)
            .map_err(|e| format!("range mode: {e}\n    got {}", format_value(&value)))
    }

    fn check(
        &self,
        eval: &Eval,
        outcome: Outcome,
        matrix_range: Option<(i64, i64, i64)>,
    ) -> Result<(), String> {
        let (value, warnings, infos) = match (outcome, &eval.fail) {
            (Err(e), Some(want)) => {
                return if want.matches(&e) {
                    Ok(())
                } else {
                    Err(format!("expected error matching {want}, got: {e}"))
                };
            }
            (Err(e), None) => return Err(format!("error: {e}")),
            (Ok((value, ..)), Some(_)) => {
                return Err(format!("expected an error, got {}", format_value(&value)));
            }
            (Ok(r), None) => r,
        };
        check_annotations(eval, &warnings, &infos)?;
        compare_result(eval, &value, matrix_range)
            .map_err(|e| format!("{e}\n    got {}", format_value(&value)))
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    passed: usize,
    failed: usize,
    /// Of the failed, those that need native histograms.
    need_histograms: usize,
    unparseable: usize,
}

/// Runs one script; returns its tally and, for verbose output, the failures.
async fn run_script(script: &Script) -> (Tally, Vec<String>) {
    let mut runner = Runner {
        engine: Engine::new(EngineConfig::default()),
        storage: MemStorage::default(),
    };
    let mut tally = Tally {
        unparseable: script.errors.len(),
        ..Tally::default()
    };
    let mut failures: Vec<String> = script
        .errors
        .iter()
        .map(|(line, e)| format!("  line {line}: unparseable: {e}"))
        .collect();
    for cmd in &script.commands {
        match cmd {
            Command::Clear => runner.storage = MemStorage::default(),
            Command::Load {
                interval,
                with_nhcb,
                series,
            } => runner.storage.load(*interval, *with_nhcb, series),
            Command::Eval(eval) => match runner.run_eval(eval).await {
                Ok(()) => tally.passed += 1,
                Err(e) => {
                    tally.failed += 1;
                    if e.starts_with(NEEDS_HISTOGRAMS) {
                        tally.need_histograms += 1;
                    }
                    failures.push(format!(
                        "  line {}: {}\n    expected {}\n    {e}",
                        eval.line,
                        eval.expr,
                        format_expected(eval)
                    ));
                }
            },
        }
    }
    (tally, failures)
}

/// `name N` lines; `#` starts a comment.
fn parse_baseline(text: &str) -> Result<HashMap<String, usize>, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(name), Some(n), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("bad baseline line {line:?}"));
        };
        let n = n.parse().map_err(|_| format!("bad count in {line:?}"))?;
        out.insert(name.to_string(), n);
    }
    Ok(out)
}

#[test]
fn promql_conformance() {
    install_quiet_panic_hook();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/promql");
    let verbose = std::env::var("STRATA_PROMQL_VERBOSE").is_ok_and(|v| v == "1");
    let baseline_text = std::fs::read_to_string(dir.join("baseline.txt"))
        .expect("tests/promql/baseline.txt exists");
    let baseline = parse_baseline(&baseline_text).expect("baseline.txt is well formed");

    let mut files: Vec<_> = std::fs::read_dir(dir.join("testdata"))
        .expect("tests/promql/testdata exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .test files found");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (mut required, mut all) = (Tally::default(), Tally::default());
    let mut problems: Vec<String> = Vec::new();
    let mut raise: Vec<String> = Vec::new();
    for path in &files {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a UTF-8 file name")
            .to_string();
        let text = std::fs::read_to_string(path).expect("readable test file");
        let script = parse_script(&text);
        let (tally, failures) = runtime.block_on(run_script(&script));
        let is_required = REQUIRED.contains(&name.as_str());
        let mut line = format!("{name}: {} passed, {} failed", tally.passed, tally.failed);
        if tally.unparseable > 0 {
            let _ = write!(line, ", {} unparseable", tally.unparseable);
        }
        if tally.need_histograms > 0 {
            let _ = write!(
                line,
                " ({} of the failed need native histograms)",
                tally.need_histograms
            );
        }
        if !is_required {
            line.push_str(" (reported only)");
        }
        println!("{line}");
        if verbose {
            for f in &failures {
                println!("{f}");
            }
        }
        for (sum, include) in [(&mut all, true), (&mut required, is_required)] {
            if include {
                sum.passed += tally.passed;
                sum.failed += tally.failed;
                sum.need_histograms += tally.need_histograms;
                sum.unparseable += tally.unparseable;
            }
        }
        if !is_required {
            continue;
        }
        if tally.unparseable > 0 {
            problems.push(format!(
                "{name}: {} blocks could not be parsed",
                tally.unparseable
            ));
            for (line, e) in &script.errors {
                problems.push(format!("  line {line}: {e}"));
            }
        }
        let floor = baseline.get(&name).copied().unwrap_or(0);
        if tally.passed < floor {
            problems.push(format!(
                "{name}: {} evals pass, fewer than the baseline of {floor}",
                tally.passed
            ));
        } else if tally.passed > floor {
            raise.push(format!("{name} {}", tally.passed));
        }
    }
    println!(
        "required: {} passed, {} failed\nall: {} passed, {} failed",
        required.passed,
        required.failed + required.unparseable,
        all.passed,
        all.failed + all.unparseable
    );
    if !raise.is_empty() {
        println!(
            "More evals pass than tests/promql/baseline.txt records; raise it to:\n  {}",
            raise.join("\n  ")
        );
    }
    for name in baseline.keys() {
        if !REQUIRED.contains(&name.as_str()) {
            problems.push(format!(
                "baseline.txt names {name}, which is not a required file"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "PromQL conformance regressed:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Unit tests of the script parsing and comparison.
// ---------------------------------------------------------------------------

mod parsing {
    use super::*;

    fn floats(values: &[SeqValue]) -> Vec<f64> {
        values
            .iter()
            .map(|v| match v {
                SeqValue::Float(f) => *f,
                other => panic!("expected a float, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn expanding_notation() {
        assert_eq!(
            floats(&parse_values("1+2x3").unwrap()),
            [1.0, 3.0, 5.0, 7.0]
        );
        assert_eq!(floats(&parse_values("1-1x2").unwrap()), [1.0, 0.0, -1.0]);
        assert_eq!(floats(&parse_values("-1-1x2").unwrap()), [-1.0, -2.0, -3.0]);
        assert_eq!(floats(&parse_values("5x2").unwrap()), [5.0, 5.0, 5.0]);
        assert_eq!(
            floats(&parse_values("1+1x2 3\t4").unwrap()),
            [1.0, 2.0, 3.0, 3.0, 4.0]
        );
        assert_eq!(floats(&parse_values("0.5+1e-1x1").unwrap()), [0.5, 0.6]);
        assert_eq!(floats(&parse_values("-9.98e+307").unwrap()), [-9.98e307]);
        assert_eq!(
            parse_values("_ _x2 1").unwrap(),
            [
                SeqValue::Omitted,
                SeqValue::Omitted,
                SeqValue::Omitted,
                SeqValue::Float(1.0)
            ]
        );
        let special = parse_values("Inf -Inf +Inf NaN stale").unwrap();
        let f = floats(&special);
        assert_eq!(&f[..3], [f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY]);
        assert!(f[3].is_nan() && f[3].to_bits() != STALE_NAN_BITS);
        assert_eq!(f[4].to_bits(), STALE_NAN_BITS);
        assert!(parse_values("").unwrap().is_empty());
        for bad in ["1+2", "1x", "abc", "1+stale x2", "-stale", "1y"] {
            assert!(parse_values(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn native_histograms_are_parsed() {
        let v = parse_values("{{schema:1 sum:5 count:4 buckets:[1 2 1] offset:-1}} 3").unwrap();
        let SeqValue::Histogram(h) = &v[0] else {
            panic!("expected a histogram, got {:?}", v[0]);
        };
        assert_eq!((h.schema, h.sum, h.count), (1, 5.0, 4.0));
        assert_eq!(
            h.positive_spans,
            [Span {
                offset: -1,
                length: 3
            }]
        );
        assert_eq!(h.positive_buckets, [1.0, 2.0, 1.0]);
        assert_eq!(v[1], SeqValue::Float(3.0));
        let v = parse_values("{{count:1 buckets:[1]}}+{{count:1 buckets:[2]}}x2 _").unwrap();
        assert_eq!(v.len(), 4);
        let SeqValue::Histogram(last) = &v[2] else {
            panic!("expected a histogram, got {:?}", v[2]);
        };
        assert_eq!(
            (last.count, last.positive_buckets.as_slice()),
            (3.0, &[5.0][..])
        );
        assert_eq!(v[3], SeqValue::Omitted);
        let gauge = parse_values("{{counter_reset_hint:gauge n_buckets:[1] n_offset:2}}").unwrap();
        let SeqValue::Histogram(g) = &gauge[0] else {
            panic!("expected a histogram");
        };
        assert_eq!(g.counter_reset_hint, CounterResetHint::Gauge);
        assert_eq!(
            g.negative_spans,
            [Span {
                offset: 2,
                length: 1
            }]
        );
        assert_eq!(parse_values("{{sum:1}}x1").unwrap().len(), 2);
        assert!(parse_values("{{sum:1}").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("10s53ms"), Ok(10_053));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("1y"), Ok(365 * 86_400_000));
        assert_eq!(parse_duration("1000s"), Ok(1_000_000));
        for bad in ["", "5", "m", "-5m", "5m1h", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn numbers_as_go_parses_them() {
        assert_eq!(parse_number("3"), Some(3.0));
        assert_eq!(parse_number("-0.25"), Some(-0.25));
        assert_eq!(parse_number("1e3"), Some(1000.0));
        assert_eq!(parse_number("0x10"), Some(16.0));
        assert_eq!(parse_number("010"), Some(8.0));
        assert_eq!(parse_number("+Inf"), Some(f64::INFINITY));
        assert!(parse_number("NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_number("{} 3"), None);
        assert_eq!(parse_number("foo"), None);
        assert_eq!(parse_number("nanny"), None);
    }

    #[test]
    fn series_descriptions() {
        let (labels, values) =
            parse_series_line(r#"http_requests{job="api", instance="0",} 1 2"#).unwrap();
        assert_eq!(
            labels,
            Labels::from_pairs([
                ("__name__", "http_requests"),
                ("job", "api"),
                ("instance", "0")
            ])
        );
        assert_eq!(values.len(), 2);
        let (labels, _) = parse_series_line(r#"{__name__="a:b", x='y\'z'} 1"#).unwrap();
        assert_eq!(
            labels,
            Labels::from_pairs([("__name__", "a:b"), ("x", "y'z")])
        );
        let (labels, _) = parse_series_line(r#"{"utf8.name", "a.b"="c\n\u00e9\x41"} 1"#).unwrap();
        assert_eq!(
            labels,
            Labels::from_pairs(
                [("__name__", "utf8.name"), ("a.b", "c\né A")]
                    .map(|(n, v)| (n, v.replace(' ', "")))
            )
        );
        let (labels, values) = parse_series_line("{} 5").unwrap();
        assert!(labels.is_empty());
        assert_eq!(values, [SeqValue::Float(5.0)]);
        let (labels, _) = parse_series_line("raw{a=`x\\y`} 1").unwrap();
        assert_eq!(labels.get("a"), Some("x\\y"));
        for bad in [
            r#"m{a="b" 1"#,
            r#"m{a=~"b"} 1"#,
            r#"m{a="b",a="c"} 1"#,
            r#"m{a="b"}1"#,
            "5 5",
        ] {
            assert!(parse_series_line(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn expect_directives() {
        let (kind, m) = parse_expect("expect fail").unwrap();
        assert_eq!(kind, ExpectKind::Fail);
        assert!(m.matches("anything"));
        let (kind, m) = parse_expect("expect warn msg: PromQL warning: x (1:1)").unwrap();
        assert_eq!(kind, ExpectKind::Warn);
        assert!(m.matches("PromQL warning: x (1:1)") && !m.matches("PromQL warning: x"));
        let (_, m) = parse_expect(r"expect info regex: got NaN \([0-9]+:[0-9]+\)").unwrap();
        assert!(m.matches("quantile got NaN (1:25)") && !m.matches("got NaN"));
        let (_, m) = parse_expect("expect fail msg:vector cannot contain").unwrap();
        assert!(m.matches("vector cannot contain"));
        assert_eq!(
            parse_expect("expect no_warn").unwrap().0,
            ExpectKind::NoWarn
        );
        assert_eq!(
            parse_expect("expect ordered").unwrap().0,
            ExpectKind::Ordered
        );
        assert!(parse_expect("expect nothing").is_err());
        assert!(parse_expect("expect warn regex: (").is_err());
    }

    #[test]
    fn eval_blocks() {
        let script = parse_script(
            "# comment\nload 5m\n  m{a=\"1\"} 0+10x10\n  m{a=\"2\"} _ 1\n\n\
             eval instant at 50m m\n  m{a=\"1\"} 100\n  expect no_warn\n  m{a=\"2\"} 1\n\n\
             eval range from 0 to 10m step 5m m\n  m{a=\"1\"} 0 10 20\n\n\
             eval instant at 1m 1+1\n  2\n\n\
             eval_fail instant at 0 foo(\n\n\
             eval_ordered instant at 0 sort(m)\n  expect warn\n\n\
             eval instant at 0 \"a\"\n  expect string \"a\"\n\n\
             eval instant at 1m m[1m]\n  expect range vector from 0 to 1m step 30s\n  m{a=\"1\"} 1 2 3\n\n\
             clear\n",
        );
        assert!(script.errors.is_empty(), "{:?}", script.errors);
        let evals: Vec<&Eval> = script
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Eval(e) => Some(&**e),
                _ => None,
            })
            .collect();
        assert_eq!(evals.len(), 7);
        assert!(matches!(
            script.commands[0],
            Command::Load {
                interval: 300_000,
                ..
            }
        ));
        assert!(matches!(script.commands.last(), Some(Command::Clear)));
        assert_eq!(evals[0].kind, EvalKind::Instant { at: 3_000_000 });
        assert_eq!(evals[0].series.len(), 2);
        assert_eq!(
            evals[0].series[1].pos, 2,
            "expect lines do not count as positions"
        );
        assert!(evals[0].no_warn);
        assert_eq!(evals[0].line, 6);
        assert_eq!(
            evals[1].kind,
            EvalKind::Range {
                start: 0,
                end: 600_000,
                step: 300_000
            }
        );
        assert_eq!(evals[2].scalar, Some(SeqValue::Float(2.0)));
        assert!(matches!(evals[3].fail, Some(MessageMatch::Any)));
        assert!(evals[4].ordered && evals[4].warn.len() == 1);
        assert_eq!(evals[5].string, "a");
        assert!(evals[5].exclude_from_range_query);
        assert_eq!(evals[6].range_vector, Some((0, 60_000, 30_000)));

        let bad = parse_script(
            "eval instant at 0 m\n  m 1 2\n\neval instant at 5x m\n\n\
             eval instant at 0 m\n  expect warn\n  expect no_warn\n\nbogus\n\n\
             load 1m\n  m 1+\n\neval instant at 0 m\n  m 1\n",
        );
        assert_eq!(bad.errors.len(), 5, "{:?}", bad.errors);
        assert_eq!(
            bad.commands.len(),
            1,
            "the good eval after bad blocks is kept"
        );
    }

    #[test]
    fn float_tolerance() {
        assert!(almost_equal(1.0, 1.0 + 1e-9, EPSILON));
        assert!(!almost_equal(1.0, 1.001, EPSILON));
        assert!(almost_equal(
            f64::NAN,
            f64::from_bits(STALE_NAN_BITS),
            EPSILON
        ));
        assert!(almost_equal(f64::INFINITY, f64::INFINITY, EPSILON));
        assert!(!almost_equal(f64::INFINITY, f64::NEG_INFINITY, EPSILON));
        assert!(!almost_equal(f64::INFINITY, 1e308, EPSILON));
        assert!(!almost_equal(0.0, 1e-300, EPSILON));
        assert!(almost_equal(0.0, -0.0, EPSILON));
        assert!(!almost_equal(1.0, f64::NAN, EPSILON));
    }

    fn instant_eval(lines: &[&str]) -> Eval {
        let mut eval = Eval::new(1, "x".into(), EvalKind::Instant { at: 0 });
        let mut n = 0;
        for l in lines {
            parse_eval_line(&mut eval, l, &mut n).unwrap();
        }
        eval
    }

    fn sample(labels: &[(&str, &str)], v: f64) -> InstantSample {
        InstantSample {
            labels: Labels::from_pairs(labels.iter().copied()),
            t: 0,
            v,
            h: None,
        }
    }

    #[test]
    fn comparing_results() {
        let eval = instant_eval(&[r#"{a="1"} 1"#, r#"{a="2"} NaN"#]);
        let good = Value::Vector(vec![
            sample(&[("a", "2")], f64::NAN),
            sample(&[("a", "1")], 1.0),
        ]);
        assert_eq!(compare_result(&eval, &good, None), Ok(()));
        let missing = Value::Vector(vec![sample(&[("a", "1")], 1.0)]);
        assert!(compare_result(&eval, &missing, None).is_err());
        let extra = Value::Vector(vec![
            sample(&[("a", "1")], 1.0),
            sample(&[("a", "2")], f64::NAN),
            sample(&[("a", "3")], 1.0),
        ]);
        assert!(compare_result(&eval, &extra, None).is_err());
        let wrong = Value::Vector(vec![
            sample(&[("a", "1")], 1.1),
            sample(&[("a", "2")], f64::NAN),
        ]);
        assert!(compare_result(&eval, &wrong, None).is_err());
        assert!(compare_result(&eval, &Value::Scalar { t: 0, v: 1.0 }, None).is_err());

        let mut ordered = eval.clone();
        ordered.ordered = true;
        assert!(
            compare_result(&ordered, &good, None).is_err(),
            "order matters when ordered"
        );

        let empty = instant_eval(&[]);
        assert_eq!(compare_result(&empty, &Value::Vector(vec![]), None), Ok(()));
        assert_eq!(
            compare_result(
                &empty,
                &Value::String {
                    t: 0,
                    s: String::new()
                },
                None
            ),
            Ok(())
        );

        let scalar = instant_eval(&["-Inf"]);
        assert_eq!(
            compare_result(
                &scalar,
                &Value::Scalar {
                    t: 0,
                    v: f64::NEG_INFINITY
                },
                None
            ),
            Ok(())
        );
        assert!(compare_result(&scalar, &Value::Vector(vec![]), None).is_err());

        let mut range = Eval::new(
            1,
            "x".into(),
            EvalKind::Range {
                start: 0,
                end: 20,
                step: 10,
            },
        );
        let mut n = 0;
        parse_eval_line(&mut range, "m 1 _ 3", &mut n).unwrap();
        let series = |samples: Vec<Sample>| SeriesSamples {
            histograms: Vec::new(),
            labels: Labels::from_pairs([("__name__", "m")]),
            samples,
        };
        let ok = Value::Matrix(vec![series(vec![
            Sample { t: 0, v: 1.0 },
            Sample { t: 20, v: 3.0 },
        ])]);
        assert_eq!(compare_result(&range, &ok, Some((0, 20, 10))), Ok(()));
        let shifted = Value::Matrix(vec![series(vec![
            Sample { t: 0, v: 1.0 },
            Sample { t: 10, v: 3.0 },
        ])]);
        assert!(compare_result(&range, &shifted, Some((0, 20, 10))).is_err());
    }

    #[test]
    fn annotations() {
        let mut eval = instant_eval(&["expect warn msg: w1", "expect no_info"]);
        assert_eq!(check_annotations(&eval, &["w1".into()], &[]), Ok(()));
        assert!(check_annotations(&eval, &[], &[]).is_err());
        assert!(check_annotations(&eval, &["w1".into(), "w2".into()], &[]).is_err());
        assert!(check_annotations(&eval, &["w1".into()], &["i".into()]).is_err());
        eval = instant_eval(&[]);
        assert_eq!(
            check_annotations(&eval, &["w".into()], &["i".into()]),
            Ok(()),
            "unchecked without expect lines"
        );
    }

    #[test]
    fn baseline_format() {
        let b = parse_baseline("# comment\nfunctions 123\n\nselectors 4 # trailing\n").unwrap();
        assert_eq!(b.get("functions"), Some(&123));
        assert_eq!(b.get("selectors"), Some(&4));
        assert!(parse_baseline("functions").is_err());
        assert!(parse_baseline("functions x").is_err());
    }

    #[test]
    fn at_modifier_pinning() {
        let v = at_modifier_variants("sum(rate(m[5m]))", 60_000);
        assert_eq!(v.len(), 5);
        assert!(v[0].0.contains("@ 60.000"), "{}", v[0].0);
        assert_eq!(
            v.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
            [-600_000, 0, 12_000, 60_000, 600_000]
        );
        assert_eq!(at_modifier_variants("m", 0).len(), 3);
        assert!(at_modifier_variants("time() + m", 60_000).is_empty());
        let sub = at_modifier_variants("max_over_time(m[5m:1m] @ 10)", 60_000);
        assert!(
            sub.iter()
                .all(|(e, _)| e.contains("@ 10.000") && !e.contains("@ 60"))
        );
    }

    #[tokio::test]
    async fn storage_selects_with_matcher_semantics() {
        let mut storage = MemStorage::default();
        let script = parse_script("load 1m\n  m{a=\"1\"} 1 2 3\n  m 5 _ stale\n  n{a=\"1\"} 7\n");
        let Command::Load {
            interval, series, ..
        } = &script.commands[0]
        else {
            panic!("expected a load");
        };
        storage.load(*interval, false, series);
        let by_name = storage
            .select(&[Matcher::equal("__name__", "m")], 0, 60_000)
            .await
            .unwrap();
        assert_eq!(by_name.len(), 2);
        let no_a = storage
            .select(
                &[Matcher::equal("__name__", "m"), Matcher::equal("a", "")],
                0,
                200_000,
            )
            .await
            .unwrap();
        assert_eq!(no_a.len(), 1);
        assert_eq!(no_a[0].samples.len(), 2, "_ leaves no sample");
        assert_eq!(no_a[0].samples[1].t, 120_000);
        assert_eq!(no_a[0].samples[1].v.to_bits(), STALE_NAN_BITS);
        let window = storage
            .select(&[Matcher::equal("a", "1")], 60_000, 60_000)
            .await
            .unwrap();
        assert_eq!(
            window.len(),
            1,
            "series without samples in range are left out"
        );
        assert_eq!(window[0].samples, [Sample { t: 60_000, v: 2.0 }]);
    }

    #[test]
    fn evals_selecting_native_histograms_are_known() {
        let script = parse_script(
            "load 1m\n  h{a=\"1\"} {{schema:0 sum:1 count:1}} 2\n  f{a=\"1\"} 1\n\n\
             load_with_nhcb 1m\n  c_bucket{le=\"1\"} 1\n  c_bucket{le=\"+Inf\"} 1\n",
        );
        let mut storage = MemStorage::default();
        for cmd in &script.commands {
            let Command::Load {
                interval,
                with_nhcb,
                series,
            } = cmd
            else {
                panic!("expected loads");
            };
            storage.load(*interval, *with_nhcb, series);
        }
        assert_eq!(
            storage.series[&Labels::from_pairs([("__name__", "h"), ("a", "1")])].len(),
            1
        );
        assert!(storage.selects_histograms("sum(rate(h[5m]))"));
        assert!(storage.selects_histograms(r#"{a=~"1|2"}"#));
        assert!(storage.selects_histograms("histogram_count(c)"));
        assert!(!storage.selects_histograms("f + c_bucket"));
        assert!(!storage.selects_histograms(r#"h{a="2"}"#));
    }
}
