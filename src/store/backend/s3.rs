//! Chunk packs in S3 (or any S3-compatible server): a table is the key
//! prefix `<table>/`, an object is `<table>/<key>` in one bucket.
//!
//! S3 has no tables to create: `create_table` succeeds without a request,
//! `put` never fails with `NoSuchTable`, `list_tables` lists the common
//! prefixes of the bucket and `delete_table` deletes every object under
//! the prefix. Every HTTP request the client sends, retries included, is
//! counted by method (see [`CountingConnector`]).

use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::{Deserialize, Serialize};

use super::{ObjectClient, RequestCounter, StoreError, TableClient, TableDesc};

const BACKEND: &str = "s3";

/// Where the S3 bucket is and how to reach it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Bucket of the chunk packs (it must exist).
    pub bucket: String,
    /// Endpoint URL; empty: AWS S3 of `region`.
    pub endpoint: String,
    pub region: String,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible
    /// servers need.
    pub force_path_style: bool,
    /// Static credentials; both empty: the AWS environment chain
    /// (environment variables, web identity, instance metadata).
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Longest one operation may take, its retries included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a failed request (with backoff, within `timeout`).
    pub max_retries: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: "strata".to_string(),
            endpoint: String::new(),
            region: "us-east-1".to_string(),
            force_path_style: false,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            timeout: Duration::from_secs(30),
            max_retries: 3,
        }
    }
}

pub struct S3Objects {
    store: AmazonS3,
}

fn err(operation: &'static str) -> impl Fn(object_store::Error) -> StoreError {
    move |e| StoreError::backend(BACKEND, operation, e)
}

/// `table/` as an object-store path prefix; refuses names that are not
/// one path segment.
fn table_path(table: &str) -> Result<Path, StoreError> {
    if table.is_empty() || table.contains('/') || table == "." || table == ".." {
        return Err(StoreError::backend(
            BACKEND,
            "path",
            format!("{table:?} is not a table name"),
        ));
    }
    Ok(Path::from(table))
}

fn object_path(table: &str, key: &str) -> Result<Path, StoreError> {
    let table = table_path(table)?;
    let path = Path::parse(format!("{table}/{key}"))
        .map_err(|e| StoreError::backend(BACKEND, "path", format!("{key:?}: {e}")))?;
    if key.is_empty() || key.split('/').any(|p| p == "." || p == "..") {
        return Err(StoreError::backend(
            BACKEND,
            "path",
            format!("{key:?} is not an object key"),
        ));
    }
    Ok(path)
}

impl S3Objects {
    /// Builds the client; nothing is sent until the first request.
    pub fn new(config: &S3Config, requests: RequestCounter) -> Result<S3Objects, StoreError> {
        let static_credentials =
            !config.access_key_id.is_empty() || !config.secret_access_key.is_empty();
        // The environment chain is what the operator asked for by leaving
        // the credentials empty.
        let mut builder = if static_credentials {
            AmazonS3Builder::new()
                .with_access_key_id(&config.access_key_id)
                .with_secret_access_key(&config.secret_access_key)
        } else {
            AmazonS3Builder::from_env()
        };
        builder = builder
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.force_path_style)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(config.timeout)
                    .with_connect_timeout(config.timeout.min(Duration::from_secs(5))),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: config.max_retries,
                retry_timeout: config.timeout,
            })
            .with_http_connector(CountingConnector { requests });
        if !config.endpoint.is_empty() {
            builder = builder
                .with_endpoint(&config.endpoint)
                .with_allow_http(config.endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(err("open"))?;
        Ok(S3Objects { store })
    }
}

#[async_trait]
impl TableClient for S3Objects {
    async fn list_tables(&self) -> Result<Vec<String>, StoreError> {
        let listed = self
            .store
            .list_with_delimiter(None)
            .await
            .map_err(err("list_tables"))?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn create_table(&self, name: &str, _desc: &TableDesc) -> Result<(), StoreError> {
        table_path(name).map(|_| ())
    }

    async fn delete_table(&self, name: &str) -> Result<(), StoreError> {
        let prefix = table_path(name)?;
        let locations = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        self.store
            .delete_stream(locations)
            .try_collect::<Vec<Path>>()
            .await
            .map_err(err("delete_table"))?;
        Ok(())
    }
}

#[async_trait]
impl ObjectClient for S3Objects {
    async fn put(&self, table: &str, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        let path = object_path(table, key)?;
        self.store
            .put(&path, data.into())
            .await
            .map_err(err("put"))?;
        Ok(())
    }

    async fn get_range(
        &self,
        table: &str,
        key: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, StoreError> {
        let path = object_path(table, key)?;
        match self
            .store
            .get_range(&path, offset..offset + u64::from(len))
            .await
        {
            Ok(bytes) if bytes.len() == len as usize => Ok(bytes.to_vec()),
            Ok(bytes) => Err(StoreError::Corrupt(format!(
                "{table}/{key}: {} bytes at {offset}, wanted {len}",
                bytes.len()
            ))),
            Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound {
                backend: BACKEND,
                table: table.to_string(),
                key: key.to_string(),
            }),
            Err(e) => Err(err("get_range")(e)),
        }
    }

    async fn size(&self, table: &str, key: &str) -> Result<Option<u64>, StoreError> {
        let path = object_path(table, key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(err("size")(e)),
        }
    }

    async fn delete(&self, table: &str, key: &str) -> Result<(), StoreError> {
        let path = object_path(table, key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(err("delete")(e)),
        }
    }
}

/// Builds object_store's reqwest client and counts every request it sends,
/// so retries and list pages are counted as the server sees them.
#[derive(Debug)]
struct CountingConnector {
    requests: RequestCounter,
}

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(CountingService {
            inner,
            requests: self.requests.clone(),
        }))
    }
}

#[derive(Debug)]
struct CountingService {
    inner: HttpClient,
    requests: RequestCounter,
}

/// The S3 operation of a request, from its method and query.
fn operation(req: &HttpRequest) -> &'static str {
    let query = req.uri().query().unwrap_or("");
    match req.method().as_str() {
        "GET" if query.contains("list-type") => "list",
        "GET" => "get_range",
        "PUT" => "put",
        "HEAD" => "head",
        "DELETE" => "delete",
        "POST" if query.contains("delete") => "delete_objects",
        _ => "other",
    }
}

#[async_trait]
impl HttpService for CountingService {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.requests.inc(BACKEND, operation(&req));
        self.inner.execute(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_segment_and_keys_stay_inside() {
        assert!(table_path("chunks_1").is_ok());
        assert!(table_path("a/b").is_err());
        assert!(table_path("..").is_err());
        assert_eq!(
            object_path("chunks_1", "t/abc").expect("path").as_ref(),
            "chunks_1/t/abc"
        );
        assert!(object_path("chunks_1", "../x").is_err());
        assert!(object_path("chunks_1", "").is_err());
    }
}
