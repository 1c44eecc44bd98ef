//! Chunk packs as files: `<directory>/<table>/<tenant>/<pack hash>`. The
//! default of a single process. A pack is written to a temporary file,
//! fsynced and renamed into place, so a reader never sees half a pack.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

use super::{ObjectClient, RequestCounter, StoreError, TableClient, TableDesc};

const BACKEND: &str = "filesystem";

pub struct FilesystemObjects {
    root: PathBuf,
    requests: RequestCounter,
}

fn io_err(operation: &'static str, path: &Path) -> impl Fn(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |e| StoreError::backend(BACKEND, operation, format!("{path}: {e}"))
}

/// Refuses names that would leave the root (`..`, absolute paths).
fn checked(name: &str) -> Result<&Path, StoreError> {
    let p = Path::new(name);
    if name.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(StoreError::backend(
            BACKEND,
            "path",
            format!("{name:?} is not a relative path"),
        ));
    }
    Ok(p)
}

impl FilesystemObjects {
    pub fn new(root: PathBuf, requests: RequestCounter) -> FilesystemObjects {
        FilesystemObjects { root, requests }
    }

    fn table_dir(&self, table: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join(checked(table)?))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    super::blocking(BACKEND, f).await
}

#[async_trait]
impl TableClient for FilesystemObjects {
    async fn list_tables(&self) -> Result<Vec<String>, StoreError> {
        self.requests.inc(BACKEND, "list_tables");
        let root = self.root.clone();
        blocking(move || {
            let entries = match std::fs::read_dir(&root) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_err("list_tables", &root)(e)),
            };
            let mut out = Vec::new();
            for e in entries {
                let e = e.map_err(io_err("list_tables", &root))?;
                if e.path().is_dir()
                    && let Some(name) = e.file_name().to_str()
                {
                    out.push(name.to_string());
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn create_table(&self, name: &str, _desc: &TableDesc) -> Result<(), StoreError> {
        self.requests.inc(BACKEND, "create_table");
        let dir = self.table_dir(name)?;
        blocking(move || std::fs::create_dir_all(&dir).map_err(io_err("create_table", &dir))).await
    }

    async fn delete_table(&self, name: &str) -> Result<(), StoreError> {
        self.requests.inc(BACKEND, "delete_table");
        let dir = self.table_dir(name)?;
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err("delete_table", &dir)(e))
            }
            _ => Ok(()),
        })
        .await
    }
}

#[async_trait]
impl ObjectClient for FilesystemObjects {
    async fn put(&self, table: &str, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.requests.inc(BACKEND, "put");
        let dir = self.table_dir(table)?;
        let path = dir.join(checked(key)?);
        let table = table.to_string();
        blocking(move || {
            if !dir.is_dir() {
                return Err(StoreError::NoSuchTable {
                    backend: BACKEND,
                    table,
                });
            }
            let parent = path.parent().unwrap_or(&dir).to_path_buf();
            std::fs::create_dir_all(&parent).map_err(io_err("put", &parent))?;
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp).map_err(io_err("put", &tmp))?;
            f.write_all(&data).map_err(io_err("put", &tmp))?;
            f.sync_all().map_err(io_err("put", &tmp))?;
            std::fs::rename(&tmp, &path).map_err(io_err("put", &path))?;
            if let Ok(d) = std::fs::File::open(&parent) {
                let _ = d.sync_all();
            }
            Ok(())
        })
        .await
    }

    async fn get_range(
        &self,
        table: &str,
        key: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, StoreError> {
        self.requests.inc(BACKEND, "get_range");
        let path = self.table_dir(table)?.join(checked(key)?);
        let (table, key) = (table.to_string(), key.to_string());
        blocking(move || {
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::NotFound {
                        backend: BACKEND,
                        table,
                        key,
                    });
                }
                Err(e) => return Err(io_err("get_range", &path)(e)),
            };
            f.seek(SeekFrom::Start(offset))
                .map_err(io_err("get_range", &path))?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf).map_err(io_err("get_range", &path))?;
            Ok(buf)
        })
        .await
    }

    async fn size(&self, table: &str, key: &str) -> Result<Option<u64>, StoreError> {
        self.requests.inc(BACKEND, "size");
        let path = self.table_dir(table)?.join(checked(key)?);
        blocking(move || match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("size", &path)(e)),
        })
        .await
    }

    async fn delete(&self, table: &str, key: &str) -> Result<(), StoreError> {
        self.requests.inc(BACKEND, "delete");
        let path = self.table_dir(table)?.join(checked(key)?);
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete", &path)(e)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn packs_are_stored_and_read_by_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = FilesystemObjects::new(dir.path().to_path_buf(), RequestCounter::default());
        assert!(matches!(
            fs.put("chunks_1", "t/abc", vec![1, 2, 3]).await,
            Err(StoreError::NoSuchTable { .. })
        ));
        fs.create_table("chunks_1", &TableDesc::default())
            .await
            .expect("create");
        fs.put("chunks_1", "t/abc", (0u8..100).collect())
            .await
            .expect("put");
        assert_eq!(
            fs.get_range("chunks_1", "t/abc", 10, 3).await.expect("get"),
            vec![10, 11, 12]
        );
        assert!(matches!(
            fs.get_range("chunks_1", "t/none", 0, 1).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(fs.put("chunks_1", "../escape", vec![1]).await.is_err());
        assert_eq!(fs.list_tables().await.expect("list"), vec!["chunks_1"]);
        fs.delete_table("chunks_1").await.expect("delete");
        assert!(fs.list_tables().await.expect("list").is_empty());
    }
}
