//! The index in DynamoDB: one DynamoDB table per index table, with hash key
//! `h` (string), range key `r` (binary) and the value in `v` (binary,
//! absent when empty).
//!
//! Writes go as `BatchWriteItem`s of at most 25 rows; unprocessed items are
//! sent again with backoff. Queries use a key condition on `h` and `r`
//! (`r >= start` or `begins_with(r, prefix)`, the other bound filtered
//! here) and follow `LastEvaluatedKey` through every page. Every attempt
//! the SDK sends is counted, by operation, from its `X-Amz-Target`.
//!
//! The client is built on first use (credentials may come from the
//! environment chain, which may do I/O), so `new` never blocks; a failed
//! build is tried again on the next request.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{
    ConfigBag, Credentials, Intercept, Region, RuntimeComponents, SharedCredentialsProvider,
};
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode as DynamoBillingMode, DeleteRequest,
    KeySchemaElement, KeyType, ProvisionedThroughput, PutRequest, ScalarAttributeType, TableStatus,
    WriteRequest,
};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::{
    IndexClient, IndexEntry, IndexKey, IndexQuery, IndexRow, RequestCounter, StoreError,
    TableClient, TableDesc,
};

const BACKEND: &str = "dynamodb";

/// Rows in one `BatchWriteItem`, DynamoDB's limit.
const BATCH_ROWS: usize = 25;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingMode {
    /// Pay per request.
    #[default]
    OnDemand,
    /// `read_capacity` and `write_capacity` units per table.
    Provisioned,
}

/// Where DynamoDB is and how new index tables are provisioned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamoDbConfig {
    /// Endpoint URL; empty: AWS DynamoDB of `region`.
    pub endpoint: String,
    pub region: String,
    /// Static credentials; both empty: the AWS environment chain.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Billing mode of the tables Strata creates.
    pub billing_mode: BillingMode,
    /// Read and write capacity units of a provisioned table.
    pub read_capacity: u64,
    pub write_capacity: u64,
    /// Longest one request may take, the SDK's retries included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts of a request (SDK retries) and re-sends of unprocessed
    /// batch items, each.
    pub max_retries: u32,
}

impl Default for DynamoDbConfig {
    fn default() -> Self {
        DynamoDbConfig {
            endpoint: String::new(),
            region: "us-east-1".to_string(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            billing_mode: BillingMode::OnDemand,
            read_capacity: 300,
            write_capacity: 300,
            timeout: Duration::from_secs(10),
            max_retries: 5,
        }
    }
}

pub struct DynamoDbIndex {
    config: DynamoDbConfig,
    concurrency: usize,
    requests: RequestCounter,
    client: OnceCell<Client>,
}

fn sdk_err<E, R>(operation: &'static str) -> impl Fn(SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    move |e| StoreError::backend(BACKEND, operation, DisplayErrorContext(&e))
}

fn build_err(
    operation: &'static str,
) -> impl Fn(aws_sdk_dynamodb::error::BuildError) -> StoreError {
    move |e| StoreError::backend(BACKEND, operation, e)
}

impl DynamoDbIndex {
    /// Keeps the configuration; the client is built on first use.
    /// `concurrency` bounds the batches one write sends at once.
    pub fn new(
        config: &DynamoDbConfig,
        concurrency: usize,
        requests: RequestCounter,
    ) -> DynamoDbIndex {
        DynamoDbIndex {
            config: config.clone(),
            concurrency: concurrency.max(1),
            requests,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&Client, StoreError> {
        self.client
            .get_or_try_init(|| async {
                tokio::time::timeout(self.config.timeout, self.build())
                    .await
                    .map_err(|_| {
                        StoreError::backend(
                            BACKEND,
                            "connect",
                            format!("no client within {:?}", self.config.timeout),
                        )
                    })
            })
            .await
    }

    async fn build(&self) -> Client {
        let c = &self.config;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(c.region.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(c.timeout)
                    .connect_timeout(c.timeout.min(Duration::from_secs(5)))
                    .build(),
            )
            .retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(c.max_retries.max(1)),
            );
        if !c.access_key_id.is_empty() || !c.secret_access_key.is_empty() {
            loader = loader.credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                None,
                None,
                "strata",
            )));
        }
        if !c.endpoint.is_empty() {
            loader = loader.endpoint_url(&c.endpoint);
        }
        let shared = loader.load().await;
        let config = aws_sdk_dynamodb::config::Builder::from(&shared)
            .interceptor(CountAttempts {
                requests: self.requests.clone(),
            })
            .build();
        Client::from_conf(config)
    }

    /// Waits until a new table is ACTIVE (DynamoDB creates tables
    /// asynchronously), at most `timeout`.
    async fn wait_active(&self, name: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        loop {
            let out = client
                .describe_table()
                .table_name(name)
                .send()
                .await
                .map_err(sdk_err("create_table"))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(StoreError::backend(
                    BACKEND,
                    "create_table",
                    format!("table {name} not active within {:?}", self.config.timeout),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Sends puts or deletes in `BatchWriteItem`s of [`BATCH_ROWS`], a few
    /// at once.
    async fn write_requests(
        &self,
        client: &Client,
        table: &str,
        requests: Vec<WriteRequest>,
    ) -> Result<(), StoreError> {
        let mut batches = Vec::with_capacity(requests.len().div_ceil(BATCH_ROWS));
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            batches.push(requests.by_ref().take(BATCH_ROWS).collect::<Vec<_>>());
        }
        stream::iter(batches)
            .map(|batch| self.write_batch(client, table, batch))
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Sends one batch, then its unprocessed items again with backoff.
    async fn write_batch(
        &self,
        client: &Client,
        table: &str,
        mut batch: Vec<WriteRequest>,
    ) -> Result<(), StoreError> {
        let mut backoff = Duration::from_millis(50);
        for attempt in 0..=self.config.max_retries {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            let out = client
                .batch_write_item()
                .request_items(table, batch)
                .send()
                .await
                .map_err(|e| {
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception())
                    {
                        StoreError::NoSuchTable {
                            backend: BACKEND,
                            table: table.to_string(),
                        }
                    } else {
                        sdk_err("write")(e)
                    }
                })?;
            batch = out
                .unprocessed_items
                .and_then(|mut m| m.remove(table))
                .unwrap_or_default();
            if batch.is_empty() {
                return Ok(());
            }
        }
        Err(StoreError::backend(
            BACKEND,
            "write",
            format!(
                "{} items of {table} still unprocessed after {} retries",
                batch.len(),
                self.config.max_retries
            ),
        ))
    }
}

#[async_trait]
impl TableClient for DynamoDbIndex {
    async fn list_tables(&self) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = client
                .list_tables()
                .set_exclusive_start_table_name(start)
                .send()
                .await
                .map_err(sdk_err("list_tables"))?;
            out.extend(page.table_names().iter().cloned());
            match page.last_evaluated_table_name() {
                Some(last) => start = Some(last.to_string()),
                None => break,
            }
        }
        out.sort();
        Ok(out)
    }

    async fn create_table(&self, name: &str, desc: &TableDesc) -> Result<(), StoreError> {
        let client = self.client().await?;
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .map_err(build_err("create_table"))
        };
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .map_err(build_err("create_table"))
        };
        let provisioned = desc.provisioned.or(match self.config.billing_mode {
            BillingMode::OnDemand => None,
            BillingMode::Provisioned => {
                Some((self.config.read_capacity, self.config.write_capacity))
            }
        });
        let mut request = client
            .create_table()
            .table_name(name)
            .attribute_definitions(attr("h", ScalarAttributeType::S)?)
            .attribute_definitions(attr("r", ScalarAttributeType::B)?)
            .key_schema(key("h", KeyType::Hash)?)
            .key_schema(key("r", KeyType::Range)?);
        request = match provisioned {
            None => request.billing_mode(DynamoBillingMode::PayPerRequest),
            Some((read, write)) => request
                .billing_mode(DynamoBillingMode::Provisioned)
                .provisioned_throughput(
                    ProvisionedThroughput::builder()
                        .read_capacity_units(read.min(i64::MAX as u64) as i64)
                        .write_capacity_units(write.min(i64::MAX as u64) as i64)
                        .build()
                        .map_err(build_err("create_table"))?,
                ),
        };
        match request.send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) => {}
            Err(e) => return Err(sdk_err("create_table")(e)),
        }
        self.wait_active(name).await
    }

    async fn delete_table(&self, name: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        match client.delete_table().table_name(name).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_err("delete_table")(e)),
        }
    }
}

#[async_trait]
impl IndexClient for DynamoDbIndex {
    async fn write(&self, table: &str, entries: &[IndexEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        // One batch may not name a key twice: the last value wins, as it
        // would have written one after the other.
        let mut last: HashMap<(&str, &[u8]), &IndexEntry> = HashMap::new();
        for e in entries {
            last.insert((e.hash.as_str(), e.range.as_slice()), e);
        }
        let mut rows: Vec<&IndexEntry> = last.into_values().collect();
        rows.sort_by(|a, b| (&a.hash, &a.range).cmp(&(&b.hash, &b.range)));
        let mut requests = Vec::with_capacity(rows.len());
        for e in rows {
            let mut put = PutRequest::builder()
                .item("h", AttributeValue::S(e.hash.clone()))
                .item("r", AttributeValue::B(Blob::new(e.range.clone())));
            if !e.value.is_empty() {
                put = put.item("v", AttributeValue::B(Blob::new(e.value.clone())));
            }
            let put = put.build().map_err(build_err("write"))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        self.write_requests(client, table, requests).await
    }

    async fn query(&self, table: &str, query: &IndexQuery) -> Result<Vec<IndexRow>, StoreError> {
        let client = self.client().await?;
        let lower = query.lower_bound();
        let by_start = query.range_start.is_some() && lower != query.range_prefix.as_slice();
        let (condition, bound) = if by_start {
            ("h = :h AND r >= :r", Some(lower.to_vec()))
        } else if !query.range_prefix.is_empty() {
            (
                "h = :h AND begins_with(r, :r)",
                Some(query.range_prefix.clone()),
            )
        } else {
            ("h = :h", None)
        };
        let mut out = Vec::new();
        let mut start_key: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut request = client
                .query()
                .table_name(table)
                .key_condition_expression(condition)
                .expression_attribute_values(":h", AttributeValue::S(query.hash.clone()))
                .set_exclusive_start_key(start_key.take());
            if let Some(bound) = &bound {
                request = request
                    .expression_attribute_values(":r", AttributeValue::B(Blob::new(bound.clone())));
            }
            let page = match request.send().await {
                Ok(page) => page,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    return Ok(Vec::new());
                }
                Err(e) => return Err(sdk_err("query")(e)),
            };
            let mut past_prefix = false;
            for item in page.items() {
                let range = match item.get("r") {
                    Some(AttributeValue::B(b)) => b.as_ref(),
                    _ => {
                        return Err(StoreError::Corrupt(format!(
                            "{BACKEND}: a row of {table} has no binary range key"
                        )));
                    }
                };
                if by_start && !range.starts_with(&query.range_prefix) {
                    // Rows are sorted: past the start, the prefix's rows
                    // have all been seen.
                    past_prefix = true;
                    break;
                }
                if !query.matches(range) {
                    continue;
                }
                let value = match item.get("v") {
                    Some(AttributeValue::B(b)) => b.as_ref().to_vec(),
                    None => Vec::new(),
                    Some(_) => {
                        return Err(StoreError::Corrupt(format!(
                            "{BACKEND}: a row of {table} has a non-binary value"
                        )));
                    }
                };
                out.push(IndexRow {
                    range: range.to_vec(),
                    value,
                });
            }
            match page.last_evaluated_key {
                Some(key) if !past_prefix => start_key = Some(key),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn delete(&self, table: &str, keys: &[IndexKey]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        // One batch may not name a key twice.
        let mut keys: Vec<&IndexKey> = keys.iter().collect();
        keys.sort();
        keys.dedup();
        let mut requests = Vec::with_capacity(keys.len());
        for k in keys {
            let delete = DeleteRequest::builder()
                .key("h", AttributeValue::S(k.hash.clone()))
                .key("r", AttributeValue::B(Blob::new(k.range.clone())))
                .build()
                .map_err(build_err("delete"))?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        match self.write_requests(client, table, requests).await {
            Err(StoreError::NoSuchTable { .. }) => Ok(()),
            other => other,
        }
    }
}

/// Counts every attempt the SDK sends (its retries too), by operation.
#[derive(Debug)]
struct CountAttempts {
    requests: RequestCounter,
}

impl Intercept for CountAttempts {
    fn name(&self) -> &'static str {
        "strata-count-requests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("");
        self.requests.inc(BACKEND, operation(target));
        Ok(())
    }
}

/// The counter label of a DynamoDB JSON operation (`DynamoDB_20120810.Query`).
fn operation(target: &str) -> &'static str {
    match target.rsplit('.').next().unwrap_or("") {
        "BatchWriteItem" => "write",
        "Query" => "query",
        "ListTables" => "list_tables",
        "CreateTable" => "create_table",
        "DescribeTable" => "describe_table",
        "DeleteTable" => "delete_table",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_from_the_target_header() {
        assert_eq!(operation("DynamoDB_20120810.BatchWriteItem"), "write");
        assert_eq!(operation("DynamoDB_20120810.Query"), "query");
        assert_eq!(operation(""), "other");
    }
}
