//! The integration-test harness: real processes on loopback with free ports,
//! each killed when its guard drops (also when the test fails).

#![allow(dead_code)] // each test binary uses a part of the harness

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A free TCP port on 127.0.0.1 (the OS picks it; it is released at once).
pub fn free_port() -> u16 {
    // The kernel may hand the same free port out twice in a row (a
    // process's HTTP and gRPC ports once collided): never give one twice.
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return port;
        }
    }
}

/// Polls `check` every 100 ms until it returns `Ok(Some(v))`, for at most `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_error = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last_error = format!("{err:#}"),
        }
        if start.elapsed() > limit {
            bail!("{what}: not reached within {limit:?} (last error: {last_error})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

/// A child process that is killed (SIGKILL) when dropped.
pub struct Guard {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Guard {
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Result<Guard> {
        let out = std::fs::File::create(&log).with_context(|| format!("create {log:?}"))?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("spawn {name}"))?;
        Ok(Guard {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = None;
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut().context("process already reaped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if start.elapsed() > limit {
                bail!("{} did not exit within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A real etcd on loopback with its data in a temporary directory.
pub struct Etcd {
    pub guard: Guard,
    pub client_port: u16,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd on free ports; tries again on new ports if one was taken
    /// in the meantime.
    pub async fn start() -> Result<Etcd> {
        let mut last = None;
        for _ in 0..3 {
            match Etcd::try_start().await {
                Ok(etcd) => return Ok(etcd),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    async fn try_start() -> Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let client_port = free_port();
        let peer_port = free_port();
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut command = Command::new("etcd");
        command
            .arg("--name=s1")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=s1={peer}"))
            .arg("--log-level=warn");
        let mut guard = Guard::spawn("etcd", command, dir.path().join("etcd.log"))
            .context("etcd must be installed (tests/run.sh installs it)")?;
        let http = http();
        let health = format!("{client}/health");
        let start = Instant::now();
        loop {
            if let Some(status) = guard.exited() {
                bail!("etcd exited with {status}: {}", guard.log_text());
            }
            if let Ok(response) = http.get(&health).send().await
                && let Ok(body) = response.text().await
                && body.contains("\"health\":\"true\"")
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("etcd not healthy within 30 s: {}", guard.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Etcd {
            guard,
            client_port,
            _dir: dir,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

/// Prometheus 3.16, built by tests/install-deps.sh into the tools cache
/// (`$STRATA_TOOLS`, by default `~/.cache/strata-tools`).
pub fn prometheus3() -> PathBuf {
    std::env::var_os("STRATA_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/strata-tools")))
        .unwrap_or_default()
        .join("prometheus-3.16/prometheus")
}

/// The path of the `strata` binary under test.
pub fn strata_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_strata"))
}

/// A `strata` process on loopback.
pub struct Strata {
    pub guard: Guard,
    pub http_port: u16,
    pub grpc_port: u16,
    /// The process's working directory (its `data/` lives here), unless the
    /// test owns it (see [`Strata::spawn_in`]).
    pub dir: Option<tempfile::TempDir>,
    workdir: PathBuf,
    args: Vec<String>,
}

impl Strata {
    /// Starts `strata` with loopback listeners on free ports and `args`, in
    /// a fresh temporary working directory.
    pub fn spawn(name: &str, args: &[String]) -> Result<Strata> {
        let dir = tempfile::tempdir()?;
        let mut strata = Strata::spawn_in(name, dir.path(), args)?;
        strata.dir = Some(dir);
        Ok(strata)
    }

    /// Starts `strata` in `workdir` (which the caller keeps, e.g. to restart
    /// on the same WAL).
    pub fn spawn_in(name: &str, workdir: &Path, args: &[String]) -> Result<Strata> {
        Strata::spawn_on(name, workdir, free_port(), free_port(), args)
    }

    /// Starts the same process again on the same ports, e.g. after
    /// [`Guard::kill9`].
    pub fn respawn(&mut self) -> Result<()> {
        let dir = self.dir.take();
        let name = self.guard.name.clone();
        *self = Strata::spawn_on(
            &name,
            &self.workdir,
            self.http_port,
            self.grpc_port,
            &self.args,
        )?;
        self.dir = dir;
        Ok(())
    }

    fn spawn_on(
        name: &str,
        workdir: &Path,
        http_port: u16,
        grpc_port: u16,
        args: &[String],
    ) -> Result<Strata> {
        let log = workdir.join(format!(
            "strata-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let mut command = Command::new(strata_bin());
        command
            .current_dir(workdir)
            .arg("--server.http-listen-address=127.0.0.1")
            .arg(format!("--server.http-listen-port={http_port}"))
            .arg("--server.grpc-listen-address=127.0.0.1")
            .arg(format!("--server.grpc-listen-port={grpc_port}"))
            .args(args);
        let guard = Guard::spawn(name, command, log)?;
        Ok(Strata {
            guard,
            http_port,
            grpc_port,
            dir: None,
            workdir: workdir.to_path_buf(),
            args: args.to_vec(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http_port, path)
    }

    /// Waits until `/ready` answers 200; fails at once if the process exits.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let http = http();
        let url = self.url("/ready");
        let start = Instant::now();
        let mut respawns = 0;
        loop {
            if let Some(status) = self.guard.exited() {
                // Another process took a port between free_port() and bind:
                // start again on new ports.
                if respawns < 3 && self.guard.log_text().contains("cannot listen on") {
                    respawns += 1;
                    let name = self.guard.name.clone();
                    let fresh = Strata::spawn_in(&name, &self.workdir, &self.args)?;
                    let dir = self.dir.take();
                    *self = fresh;
                    self.dir = dir;
                    continue;
                }
                bail!(
                    "{} exited with {status} before it was ready; log:\n{}",
                    self.guard.name,
                    self.guard.log_text()
                );
            }
            if let Ok(response) = http.get(&url).send().await
                && response.status() == 200
            {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "{} not ready within 60 s; log:\n{}",
                    self.guard.name,
                    self.guard.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The sum of the values in `/metrics` of metric `name` over its series
    /// whose line contains `with` (e.g. a label pair; "" for all); 0 when
    /// there are none.
    pub async fn metric_sum(&self, name: &str, with: &str) -> Result<f64> {
        let text = http()
            .get(self.url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(with))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |sum, v| sum + v))
    }

    /// `strata_discarded_samples_total` of `reason` and `tenant`.
    pub async fn discarded(&self, reason: &str, tenant: &str) -> Result<f64> {
        self.metric_sum(
            "strata_discarded_samples_total",
            &format!("{{reason=\"{reason}\",tenant=\"{tenant}\"}} "),
        )
        .await
    }

    /// Waits until this process's view of the ring shows `count` ACTIVE
    /// members.
    pub async fn wait_active(&self, count: usize) -> Result<()> {
        eventually(
            &format!("{count} ACTIVE ingesters in the ring"),
            Duration::from_secs(30),
            || async {
                let ring = self.ring().await?;
                let active = ring["members"]
                    .as_array()
                    .map_or(0, |m| m.iter().filter(|m| m["state"] == "ACTIVE").count());
                Ok((active == count).then_some(()))
            },
        )
        .await
    }

    /// `/ring` as JSON.
    pub async fn ring(&self) -> Result<serde_json::Value> {
        let response = http()
            .get(self.url("/ring"))
            .header("Accept", "application/json")
            .send()
            .await?;
        if response.status() != 200 {
            bail!("/ring answered {}", response.status());
        }
        Ok(response.json().await?)
    }
}

/// One metric's value from a process's `/metrics` (the sum of its series;
/// 0 when absent).
pub async fn metric(strata: &Strata, name: &str) -> Result<f64> {
    strata.metric_sum(name, "").await
}

/// Remote-write helpers: build, encode and send requests; read back series
/// straight from an ingester over gRPC.
pub mod promql;

pub mod rw {
    use anyhow::Result;
    use prost::Message;
    use strata::proto::prometheus::{Label, LabelMatcher, Sample, TimeSeries, WriteRequest};

    pub fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    /// Proto labels from pairs, in the order given.
    pub fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    /// A series; labels are given sorted by name.
    pub fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|(t, v)| Sample {
                    timestamp: *t,
                    value: *v,
                })
                .collect(),
            ..Default::default()
        }
    }

    pub fn encode(request: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .expect("snappy compresses")
    }

    pub struct Answer {
        pub status: u16,
        pub body: String,
        pub headers: reqwest::header::HeaderMap,
    }

    /// POSTs a raw body with the remote-write headers (1.0 unless `content_type` says otherwise).
    pub async fn post(
        url: &str,
        tenant: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Answer> {
        let mut request = super::http()
            .post(url)
            .header("Content-Type", content_type)
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body);
        if let Some(tenant) = tenant {
            request = request.header("X-Scope-OrgID", tenant);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await?;
        Ok(Answer {
            status,
            body,
            headers,
        })
    }

    pub async fn push(url: &str, tenant: &str, series: Vec<TimeSeries>) -> Result<Answer> {
        let request = WriteRequest {
            timeseries: series,
            metadata: vec![],
        };
        post(
            url,
            Some(tenant),
            "application/x-protobuf",
            encode(&request),
        )
        .await
    }

    pub fn eq(name: &str, value: &str) -> LabelMatcher {
        LabelMatcher {
            r#type: 0,
            name: name.to_string(),
            value: value.to_string(),
        }
    }

    /// Every series matching `matchers` in one ingester, with its samples
    /// (labels as `name=value` pairs), sorted by labels.
    pub async fn query_ingester(
        grpc_port: u16,
        tenant: &str,
        matchers: Vec<LabelMatcher>,
        start: i64,
        end: i64,
    ) -> Result<Vec<(Vec<(String, String)>, Vec<(i64, f64)>)>> {
        use strata::chunk::merge::{ChunkData, merge_chunks};
        use strata::ingester::client::{
            IngesterClient, QueryRequest, SeriesChunkData, decode_chunks,
        };
        let mut client = IngesterClient::connect(format!("http://127.0.0.1:{grpc_port}")).await?;
        let mut stream = client
            .query_stream(QueryRequest {
                tenant: tenant.to_string(),
                start_ms: start,
                end_ms: end,
                matchers,
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(message) = stream.message().await? {
            for series in message.series {
                // Float samples only: native histogram chunks are left out.
                let mut chunks: Vec<ChunkData> = Vec::new();
                for chunk in series.chunks {
                    if let SeriesChunkData::Xor(c) = decode_chunks(chunk)? {
                        chunks.push(c);
                    }
                }
                let samples: Vec<(i64, f64)> = merge_chunks(&chunks, start, end)?
                    .into_iter()
                    .map(|s| (s.t, s.v))
                    .collect();
                let labels: Vec<(String, String)> = series
                    .labels
                    .into_iter()
                    .map(|l| (l.name, l.value))
                    .collect();
                out.push((labels, samples));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// A real sender: Debian's Prometheus 2.42 or vmagent, on loopback.
pub struct Sender {
    pub guard: Guard,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Sender {
    /// Prometheus on `port` with `config` (YAML) as its config file.
    pub async fn prometheus(name: &str, port: u16, config: &str) -> Result<Sender> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config)?;
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let guard = Guard::spawn(name, command, dir.path().join("prometheus.log"))
            .context("prometheus must be installed (tests/install-deps.sh installs it)")?;
        let sender = Sender {
            guard,
            port,
            _dir: dir,
        };
        sender.wait_http("/-/ready").await?;
        Ok(sender)
    }

    /// vmagent on `port` scraping with `scrape_config` (YAML) and
    /// remote-writing to `url` with extra `-remoteWrite.*` arguments.
    pub async fn vmagent(
        name: &str,
        port: u16,
        scrape_config: &str,
        url: &str,
        extra: &[String],
    ) -> Result<Sender> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("scrape.yml");
        std::fs::write(&file, scrape_config)?;
        let mut command = Command::new("vmagent");
        command
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-promscrape.config={}", file.display()))
            .arg(format!("-remoteWrite.url={url}"))
            .arg(format!(
                "-remoteWrite.tmpDataPath={}",
                dir.path().join("tmp").display()
            ))
            .arg("-remoteWrite.flushInterval=1s")
            .args(extra);
        let guard = Guard::spawn(name, command, dir.path().join("vmagent.log")).context(
            "vmagent must be installed (tests/install-deps.sh installs victoria-metrics)",
        )?;
        let sender = Sender {
            guard,
            port,
            _dir: dir,
        };
        sender.wait_http("/health").await?;
        Ok(sender)
    }

    async fn wait_http(&self, path: &str) -> Result<()> {
        let url = format!("http://127.0.0.1:{}{}", self.port, path);
        let client = http();
        eventually(
            &format!("{} up", self.guard.name),
            Duration::from_secs(30),
            || {
                let client = client.clone();
                let url = url.clone();
                async move { Ok((client.get(&url).send().await?.status() == 200).then_some(())) }
            },
        )
        .await
        .with_context(|| self.guard.log_text())
    }
}

/// The tools cache of tests/install-deps.sh (`$STRATA_TOOLS`, by default
/// `~/.cache/strata-tools`).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("STRATA_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/strata-tools")))
        .unwrap_or_default()
}

/// A moto server (S3 and DynamoDB, in memory) on loopback.
pub struct Moto {
    pub guard: Guard,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts `moto_server` (installed by tests/install-deps.sh) on a free
    /// port; ready when it answers HTTP.
    pub async fn start() -> Result<Moto> {
        let dir = tempfile::tempdir()?;
        let mut last = None;
        for _ in 0..3 {
            let port = free_port();
            match Moto::start_on(port, dir.path()).await {
                Ok(guard) => {
                    return Ok(Moto {
                        guard,
                        port,
                        _dir: dir,
                    });
                }
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    async fn start_on(port: u16, dir: &Path) -> Result<Guard> {
        let bin = tools_dir().join("venv/bin/moto_server");
        let mut command = Command::new(&bin);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let log = dir.join(format!("moto-{port}-{}.log", std::process::id()));
        let mut guard = Guard::spawn("moto", command, log)
            .with_context(|| format!("{} (tests/install-deps.sh installs it)", bin.display()))?;
        let http = http();
        let url = format!("http://127.0.0.1:{port}/moto-api/");
        let start = Instant::now();
        loop {
            if let Some(status) = guard.exited() {
                bail!("moto exited with {status}: {}", guard.log_text());
            }
            if http.get(&url).send().await.is_ok() {
                return Ok(guard);
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("moto not answering within 60 s: {}", guard.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server (SIGKILL; its state is in memory and is lost).
    pub fn kill(&mut self) {
        self.guard.kill9();
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) -> Result<()> {
        self.guard.kill9();
        self.guard = Moto::start_on(self.port, self._dir.path()).await?;
        Ok(())
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates an S3 bucket with a plain path-style `PUT /bucket`.
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let response = http()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await?;
        ensure_success(response, "create bucket").await
    }
}

async fn ensure_success(response: reqwest::Response, what: &str) -> Result<()> {
    let status = response.status();
    if !status.is_success() {
        bail!(
            "{what}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// A real Apache Cassandra 5.0 (jars from Maven Central, installed by
/// tests/install-deps.sh) on loopback, as TESTING.md starts it.
pub struct Cassandra {
    pub guard: Guard,
    pub native_port: u16,
    pub storage_port: u16,
    /// Its configuration, data and log.
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

const CASSANDRA_JVM_OPTIONS: &str = "-Djdk.attach.allowAttachSelf=true
--add-exports java.base/jdk.internal.misc=ALL-UNNAMED
--add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
--add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
--add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
--add-exports java.sql/java.sql=ALL-UNNAMED
--add-exports java.base/java.lang.ref=ALL-UNNAMED
--add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
--add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
--add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
--add-opens java.base/java.lang.module=ALL-UNNAMED
--add-opens java.base/jdk.internal.loader=ALL-UNNAMED
--add-opens java.base/jdk.internal.ref=ALL-UNNAMED
--add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
--add-opens java.base/jdk.internal.math=ALL-UNNAMED
--add-opens java.base/jdk.internal.module=ALL-UNNAMED
--add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
--add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
--add-opens java.base/sun.nio.ch=ALL-UNNAMED
--add-opens java.base/java.io=ALL-UNNAMED
--add-opens java.base/java.lang.reflect=ALL-UNNAMED
--add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
--add-opens java.base/java.lang=ALL-UNNAMED
--add-opens java.base/java.util=ALL-UNNAMED
-Dio.netty.tryReflectionSetAccessible=true
";

/// The one Cassandra of a test binary (see [`Cassandra::shared`]).
static SHARED_CASSANDRA: std::sync::OnceLock<std::result::Result<u16, String>> =
    std::sync::OnceLock::new();

impl Cassandra {
    /// Starts a Cassandra of its own in a temporary directory on free
    /// ports (≈1 GB of memory: prefer [`Cassandra::shared`]).
    pub async fn start() -> Result<Cassandra> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_path_buf();
        let mut c = Cassandra::start_in(&dir, free_port(), free_port(), false).await?;
        c._tmp = Some(tmp);
        Ok(c)
    }

    /// Starts Cassandra with its data in `dir` (kept: start it again on
    /// the same `dir` and ports to find the data there).
    pub async fn start_in(
        dir: &Path,
        storage_port: u16,
        native_port: u16,
        die_with_thread: bool,
    ) -> Result<Cassandra> {
        let lib = tools_dir().join("cassandra-5.0.9/lib");
        if !lib.is_dir() {
            bail!(
                "{} missing (tests/install-deps.sh installs it)",
                lib.display()
            );
        }
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        std::fs::write(
            dir.join("cassandra.yaml"),
            format!(
                "partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
commitlog_sync: periodic
commitlog_sync_period: 10000ms
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {storage_port}
native_transport_port: {native_port}
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters: [{{seeds: \"127.0.0.1:{storage_port}\"}}]
"
            ),
        )?;
        let options = dir.join("cassandra-jvm17.options");
        std::fs::write(&options, CASSANDRA_JVM_OPTIONS)?;
        let mut command = Command::new("java");
        command
            .args(["-Xms512m", "-Xmx512m"])
            .arg(format!("@{}", options.display()))
            .arg(format!(
                "-Dcassandra.config=file://{}",
                dir.join("cassandra.yaml").display()
            ))
            .arg("-Dcassandra-foreground=true")
            .arg(format!("-Dcassandra.storagedir={}", dir.display()))
            .arg("-cp")
            .arg(format!("{}/*", lib.display()))
            .arg("org.apache.cassandra.service.CassandraDaemon");
        if die_with_thread {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl(2) in the child before exec touches no memory
            // of the parent; it asks the kernel to kill the child when the
            // thread that spawned it ends (the process exiting included).
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let mut guard = Guard::spawn("cassandra", command, dir.join("log"))?;
        let start = Instant::now();
        loop {
            if let Some(status) = guard.exited() {
                let log = guard.log_text();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                bail!("cassandra exited with {status}: {tail}");
            }
            if cql_answers(native_port).await {
                break;
            }
            if start.elapsed() > Duration::from_secs(180) {
                bail!(
                    "cassandra not answering CQL within 180 s (log: {})",
                    dir.join("log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(Cassandra {
            guard,
            native_port,
            storage_port,
            dir,
            _tmp: None,
        })
    }

    /// Stops it cleanly (SIGTERM drains the commit log), waiting for it.
    pub fn stop(&mut self) -> Result<()> {
        self.guard.signal(libc::SIGTERM);
        self.guard.wait_exit(Duration::from_secs(60)).map(|_| ())
    }

    /// The native (CQL) port of the test binary's one shared Cassandra,
    /// started on first use; each test uses a keyspace of its own. It runs
    /// until the test binary exits (it is killed with the thread that owns
    /// it, which lives as long as the process).
    pub async fn shared() -> Result<u16> {
        let port = tokio::task::spawn_blocking(|| {
            SHARED_CASSANDRA
                .get_or_init(|| {
                    let (tx, rx) = std::sync::mpsc::channel();
                    let spawned = std::thread::Builder::new()
                        .name("shared-cassandra".to_string())
                        .spawn(move || {
                            let runtime = match tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                            {
                                Ok(r) => r,
                                Err(e) => {
                                    let _ = tx.send(Err(e.to_string()));
                                    return;
                                }
                            };
                            let dir = shared_cassandra_dir();
                            let _ = std::fs::remove_dir_all(&dir);
                            let started = runtime.block_on(Cassandra::start_in(
                                &dir,
                                free_port(),
                                free_port(),
                                true,
                            ));
                            match started {
                                Ok(c) => {
                                    let _ = tx.send(Ok(c.native_port));
                                    // Keep the guard (and the child's
                                    // parent thread) for the process's life.
                                    let _keep = c;
                                    loop {
                                        std::thread::park();
                                    }
                                }
                                Err(e) => {
                                    let _ = tx.send(Err(format!("{e:#}")));
                                }
                            }
                        });
                    match spawned {
                        Ok(_) => rx
                            .recv()
                            .unwrap_or_else(|e| Err(format!("cassandra thread: {e}"))),
                        Err(e) => Err(e.to_string()),
                    }
                })
                .clone()
        })
        .await?;
        port.map_err(|e| anyhow::anyhow!("shared cassandra: {e}"))
    }
}

/// The shared Cassandra's directory: one per test binary name (without
/// cargo's hash, so rebuilds reuse it), emptied at each start.
fn shared_cassandra_dir() -> PathBuf {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let name = binary
        .rsplit_once('-')
        .map_or(binary.as_str(), |(stem, _)| stem);
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("shared-cassandra-{name}"))
}

/// Whether Cassandra answers `SELECT release_version FROM system.local`.
pub async fn cql_answers(port: u16) -> bool {
    if std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_err()
    {
        return false;
    }
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_node(format!("127.0.0.1:{port}"))
        .connection_timeout(Duration::from_secs(5))
        .build()
        .await;
    let Ok(session) = session else {
        return false;
    };
    session
        .query_unpaged("SELECT release_version FROM system.local", &[])
        .await
        .is_ok()
}

/// Prometheus 3.16 as a remote-write receiver (see [`promql::Prometheus`]).
pub type Prometheus3 = promql::Prometheus;
