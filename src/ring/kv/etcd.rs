//! The etcd backend (`ring.kvstore.store: etcd`), on etcd's v3 API.
//!
//! Every key is stored under the configured prefix. Requests carry a
//! timeout; the client's balanced gRPC channel reconnects by itself when a
//! member comes back, and a broken watch ends its stream so that the caller
//! lists again and resumes.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Expect, KvEntry, KvError, KvStore, Snapshot, WatchEvent, WatchStream};

const STORE: &str = "etcd";

/// How to reach etcd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdConfig {
    /// etcd client endpoints, `host:port` or URLs.
    pub endpoints: Vec<String>,
    /// Timeout for establishing a connection.
    #[serde(with = "humantime_serde")]
    pub dial_timeout: Duration,
    /// Timeout for each request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// User name, when etcd authentication is on.
    pub username: String,
    /// Password, when etcd authentication is on.
    pub password: String,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".to_string()],
            dial_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            username: String::new(),
            password: String::new(),
        }
    }
}

/// A KV store on etcd.
#[derive(Clone)]
pub struct EtcdKv {
    client: Client,
    prefix: String,
    request_timeout: Duration,
}

impl EtcdKv {
    /// Builds the client. The channel connects lazily, so this does not wait
    /// for etcd to be up; requests fail (with a timeout) until it is.
    pub async fn connect(config: &EtcdConfig, prefix: &str) -> Result<EtcdKv, KvError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.dial_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if !config.username.is_empty() {
            options = options.with_user(config.username.clone(), config.password.clone());
        }
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| KvError::Connect {
                store: STORE,
                endpoints: config.endpoints.join(","),
                message: e.to_string(),
            })?;
        Ok(EtcdKv {
            client,
            prefix: prefix.to_string(),
            request_timeout: config.request_timeout,
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn relative_key(&self, full: &[u8]) -> String {
        let full = String::from_utf8_lossy(full);
        full.strip_prefix(self.prefix.as_str())
            .unwrap_or(&full)
            .to_string()
    }

    async fn timed<T, F>(&self, op: &'static str, key: &str, fut: F) -> Result<T, KvError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(KvError::Backend {
                store: STORE,
                op,
                key: key.to_string(),
                message: e.to_string(),
            }),
            Err(_) => Err(KvError::Timeout {
                store: STORE,
                op,
                key: key.to_string(),
                timeout: self.request_timeout,
            }),
        }
    }
}

#[async_trait]
impl KvStore for EtcdKv {
    fn name(&self) -> &'static str {
        STORE
    }

    async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        let mut kv = self.client.kv_client();
        let full = self.full_key(key);
        let response = self.timed("get", key, kv.get(full, None)).await?;
        Ok(response.kvs().first().map(|item| KvEntry {
            key: key.to_string(),
            value: item.value().to_vec(),
            revision: item.mod_revision(),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Snapshot, KvError> {
        let mut kv = self.client.kv_client();
        let full = self.full_key(prefix);
        let response = self
            .timed(
                "list",
                prefix,
                kv.get(full, Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        let entries = response
            .kvs()
            .iter()
            .map(|item| KvEntry {
                key: self.relative_key(item.key()),
                value: item.value().to_vec(),
                revision: item.mod_revision(),
            })
            .collect();
        Ok(Snapshot { entries, revision })
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<i64, KvError> {
        let mut kv = self.client.kv_client();
        let full = self.full_key(key);
        let response = self.timed("put", key, kv.put(full, value, None)).await?;
        Ok(response.header().map(|h| h.revision()).unwrap_or(0))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Option<Vec<u8>>,
    ) -> Result<bool, KvError> {
        let mut kv = self.client.kv_client();
        let full = self.full_key(key);
        let compare = match expect {
            // A key that does not exist has create revision 0.
            Expect::Absent => Compare::create_revision(full.clone(), CompareOp::Equal, 0),
            Expect::Revision(revision) => {
                Compare::mod_revision(full.clone(), CompareOp::Equal, revision)
            }
        };
        let op = match value {
            Some(value) => TxnOp::put(full, value, None),
            None => TxnOp::delete(full, None),
        };
        let txn = Txn::new().when([compare]).and_then([op]);
        let response = self.timed("compare_and_swap", key, kv.txn(txn)).await?;
        Ok(response.succeeded())
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let mut kv = self.client.kv_client();
        let full = self.full_key(key);
        self.timed("delete", key, kv.delete(full, None)).await?;
        Ok(())
    }

    async fn watch_prefix(
        &self,
        prefix: &str,
        after_revision: i64,
    ) -> Result<WatchStream, KvError> {
        let mut watch = self.client.watch_client();
        let full = self.full_key(prefix);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after_revision + 1);
        let stream = self
            .timed("watch", prefix, watch.watch(full, Some(options)))
            .await?;
        let this = self.clone();
        let prefix = prefix.to_string();
        let events =
            futures::stream::unfold(Some((stream, this, prefix)), move |state| async move {
                let (mut stream, this, prefix) = state?;
                loop {
                    match stream.message().await {
                        Ok(Some(response)) => {
                            if response.canceled() {
                                let err = KvError::WatchLost {
                                    store: STORE,
                                    prefix: prefix.clone(),
                                    revision: after_revision,
                                    reason: format!(
                                        "watch canceled by etcd (compacted at {}): {}",
                                        response.compact_revision(),
                                        response.cancel_reason()
                                    ),
                                };
                                return Some((Err(err), None));
                            }
                            let batch: Vec<WatchEvent> = response
                                .events()
                                .iter()
                                .filter_map(|event| {
                                    let item = event.kv()?;
                                    let key = this.relative_key(item.key());
                                    Some(match event.event_type() {
                                        EventType::Put => WatchEvent::Put(KvEntry {
                                            key,
                                            value: item.value().to_vec(),
                                            revision: item.mod_revision(),
                                        }),
                                        EventType::Delete => WatchEvent::Delete {
                                            key,
                                            revision: item.mod_revision(),
                                        },
                                    })
                                })
                                .collect();
                            if batch.is_empty() {
                                continue; // created / progress notifications
                            }
                            return Some((Ok(batch), Some((stream, this, prefix))));
                        }
                        Ok(None) => return None,
                        Err(e) => {
                            let err = KvError::Backend {
                                store: STORE,
                                op: "watch",
                                key: prefix.clone(),
                                message: e.to_string(),
                            };
                            return Some((Err(err), None));
                        }
                    }
                }
            });
        Ok(events.boxed())
    }
}
