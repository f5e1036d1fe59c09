//! The archive on object storage (S3 and servers that speak its protocol),
//! through `object_store`: `[archive] url = "s3://bucket/prefix"`.
//!
//! A file is written locally first (the archive's staging directory, as on
//! disk), then put whole: one PUT up to [`PART_BYTES`], a multipart upload
//! beyond (aborted if a part fails, so no partial object is ever listed).
//! Only once the put has returned does the archive commit the file's
//! offsets: an object whose first offset is not committed is a leftover of
//! a crash between the two and is deleted at the next start, exactly as a
//! renamed but uncommitted file on disk is.
//!
//! Credentials come from the environment, as the AWS tools read them
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION`, …); they never reach the configuration or the logs.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, WriteMultipart};

use super::ArchiveError;

/// Files up to this size are put in one request; larger ones in parts of
/// this size (S3 wants at least 5 MiB per part but the last).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// Requests in flight at once when the lifecycle moves, reads or
/// downloads many objects.
pub const AT_ONCE: usize = 16;

/// How an object store is reached: `[archive]`'s `endpoint`, `region` and
/// `allow_http`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Endpoint {
    /// An S3-compatible server's URL (path-style requests); none: AWS.
    pub endpoint: Option<String>,
    /// The bucket's region; none: the environment's, else `us-east-1`.
    pub region: Option<String>,
    /// Whether plain `http://` endpoints are allowed.
    pub allow_http: bool,
}

/// The bucket of `url` (`s3://bucket[/prefix]`), reached as `endpoint`
/// says, with the environment's credentials. Nothing is requested yet.
///
/// Each user (the archive's thread, the queries' threads) connects its
/// own: a client's pooled connections belong to the runtime that opened
/// them.
pub fn connect_store(url: &url::Url, endpoint: &Endpoint) -> Result<Arc<dyn ObjectStore>, String> {
    if url.scheme() != "s3" {
        return Err(format!("{url}: not an s3:// URL"));
    }
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("[archive] url = \"{url}\" names no bucket: give s3://bucket/prefix"))?;
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_allow_http(endpoint.allow_http);
    if let Some(region) = &endpoint.region {
        builder = builder.with_region(region);
    }
    if let Some(at) = &endpoint.endpoint {
        // An S3-compatible server: path-style requests.
        builder = builder.with_endpoint(at).with_virtual_hosted_style_request(false);
    }
    let store = builder.build().map_err(|e| format!("[archive] url = \"{url}\": {e}"))?;
    Ok(Arc::new(store))
}

/// An object of the archive, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Its key under the archive (`posts/dt=…/hour=…/name`).
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was written, µs since the epoch.
    pub modified: i64,
}

/// An archive under a prefix of a bucket.
pub struct ObjectArchive {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: url::Url,
    /// Runs the store's requests for the archive's (blocking) thread.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for ObjectArchive {
    fn drop(&mut self) {
        // Dropped from async code too, where a blocking shutdown panics.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for ObjectArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectArchive({})", self.url)
    }
}

impl ObjectArchive {
    /// The archive at `url` (`s3://bucket[/prefix]`), reached as `endpoint`
    /// says, with the environment's credentials. Nothing is requested yet.
    pub fn connect(url: &url::Url, endpoint: &Endpoint) -> Result<ObjectArchive, String> {
        ObjectArchive::new(url, connect_store(url, endpoint)?)
    }

    /// The archive at `url` in `store` (whose root is `url`'s bucket).
    pub fn new(url: &url::Url, store: Arc<dyn ObjectStore>) -> Result<ObjectArchive, String> {
        let prefix = ObjectPath::from(url.path().trim_matches('/'));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("the archive's I/O runtime: {e}"))?;
        Ok(ObjectArchive {
            store,
            prefix,
            url: url.clone(),
            runtime: Some(runtime),
        })
    }

    /// Runs `work` (a request) to its end: on the calling thread, or, when
    /// that is an async worker (opening the archive, `chorus status`), on a
    /// thread of its own, since a worker may not block.
    pub(crate) fn block_on<T: Send>(&self, work: impl std::future::Future<Output = T> + Send) -> T {
        let runtime = self.runtime.as_ref().expect("the runtime lives as long as the archive");
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(work);
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(work))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The archive's URL.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The store (for queries, which register it under [`Self::url`]).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The object of `key` (a `/`-separated path under the archive).
    pub(crate) fn path(&self, key: &str) -> ObjectPath {
        self.prefix.parts().chain(ObjectPath::from(key).parts()).collect()
    }

    pub(crate) fn failed(&self, key: &str) -> impl FnOnce(object_store::Error) -> ArchiveError + '_ {
        let key = format!("{}/{key}", self.url.as_str().trim_end_matches('/'));
        move |source| ArchiveError::Store { key, source }
    }

    /// Puts the local file `local` at `key`, whole: when this returns the
    /// object is complete and listed, and not before.
    pub fn put_file(&self, local: &Path, key: &str) -> Result<(), ArchiveError> {
        let io = |e| ArchiveError::Io {
            path: local.to_path_buf(),
            source: e,
        };
        let mut file = std::fs::File::open(local).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let path = self.path(key);
        if size <= PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(io)?;
            self.block_on(self.store.put(&path, PutPayload::from(bytes)))
                .map_err(self.failed(key))?;
            return Ok(());
        }
        let upload = self
            .block_on(self.store.put_multipart(&path))
            .map_err(self.failed(key))?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut chunk = vec![0u8; PART_BYTES];
        let sent: Result<(), ArchiveError> = self.block_on(async {
            loop {
                let n = read_full(&mut file, &mut chunk).map_err(io)?;
                if n == 0 {
                    return Ok(());
                }
                // At most two parts in flight: memory stays bounded.
                parts.wait_for_capacity(2).await.map_err(self.failed(key))?;
                parts.write(&chunk[..n]);
            }
        });
        match sent {
            Ok(()) => {
                self.block_on(parts.finish()).map_err(self.failed(key))?;
                Ok(())
            }
            Err(e) => {
                // No part stays behind (S3 would bill it until aborted).
                if let Err(abort) = self.block_on(parts.abort()) {
                    tracing::warn!(key, error = %abort, "Could not abort a failed multipart upload.");
                }
                Err(e)
            }
        }
    }

    /// Every object under `dir` (a `/`-separated path under the archive):
    /// its key under the archive and its size.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, ArchiveError> {
        Ok(self.list_objects(dir)?.into_iter().map(|o| (o.key, o.size)).collect())
    }

    /// Every object under `dir`, with its size and when it was written.
    pub fn list_objects(&self, dir: &str) -> Result<Vec<Object>, ArchiveError> {
        let under = self.path(dir);
        let skip = self.prefix.parts().count();
        self.block_on(async {
            let mut out = Vec::new();
            let mut listing = self.store.list(Some(&under));
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(self.failed(dir))?;
                let key: Vec<String> = meta
                    .location
                    .parts()
                    .skip(skip)
                    .map(|p| p.as_ref().to_string())
                    .collect();
                out.push(Object {
                    key: key.join("/"),
                    size: meta.size,
                    modified: meta.last_modified.timestamp_micros(),
                });
            }
            Ok(out)
        })
    }

    /// Moves each object of `keys` to the same key under `under` (a copy
    /// inside the store, then the delete), [`AT_ONCE`] at a time.
    pub fn move_all(&self, keys: &[String], under: &str) -> Result<(), ArchiveError> {
        self.block_on(
            futures::stream::iter(keys)
                .map(|key| async move {
                    let from = self.path(key);
                    self.store
                        .copy(&from, &self.path(&format!("{under}/{key}")))
                        .await
                        .map_err(self.failed(key))?;
                    self.delete_async(key).await
                })
                .buffer_unordered(AT_ONCE)
                .try_collect::<Vec<()>>(),
        )?;
        Ok(())
    }

    /// Writes each object of `keys` into the local file beside it,
    /// streamed, [`AT_ONCE`] at a time.
    pub fn download_all(&self, keys: &[(String, std::path::PathBuf)]) -> Result<(), ArchiveError> {
        self.block_on(
            futures::stream::iter(keys)
                .map(|(key, local)| async move {
                    use std::io::Write as _;
                    let io = |e| ArchiveError::Io {
                        path: local.clone(),
                        source: e,
                    };
                    let mut file = std::fs::File::create(local).map_err(io)?;
                    let got = self.store.get(&self.path(key)).await.map_err(self.failed(key))?;
                    let mut chunks = got.into_stream();
                    while let Some(chunk) = chunks.next().await {
                        file.write_all(&chunk.map_err(self.failed(key))?).map_err(io)?;
                    }
                    file.sync_all().map_err(io)
                })
                .buffer_unordered(AT_ONCE)
                .try_collect::<Vec<()>>(),
        )?;
        Ok(())
    }

    /// The names each compacted file of `files` (key, size) replaces, from
    /// its footer, [`AT_ONCE`] at a time: one that does not read says why.
    pub fn replaced_all(&self, files: &[(String, u64)]) -> Vec<(String, Result<Vec<String>, String>)> {
        self.block_on(
            futures::stream::iter(files)
                .map(|(key, size)| async move {
                    let names = crate::query::files::replaced_in(&*self.store, &self.path(key), *size).await;
                    (key.clone(), names)
                })
                .buffer_unordered(AT_ONCE)
                .collect(),
        )
    }

    /// Deletes each object of `keys` (gone already: fine), [`AT_ONCE`] at a
    /// time.
    pub fn delete_all(&self, keys: &[String]) -> Result<(), ArchiveError> {
        self.block_on(
            futures::stream::iter(keys)
                .map(|key| self.delete_async(key))
                .buffer_unordered(AT_ONCE)
                .try_collect::<Vec<()>>(),
        )?;
        Ok(())
    }

    /// Deletes the object at `key` (gone already: fine).
    pub fn delete(&self, key: &str) -> Result<(), ArchiveError> {
        self.block_on(self.delete_async(key))
    }

    async fn delete_async(&self, key: &str) -> Result<(), ArchiveError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(key)(e)),
        }
    }

    /// The archive's committed files, as `chorus status` shows them (a
    /// listing of `posts/` and `errors/`).
    pub fn summary(&self) -> Result<crate::wire::ArchiveStatus, ArchiveError> {
        let mut status = crate::wire::ArchiveStatus::default();
        for (_, size) in self.list(super::POSTS_DIR)? {
            status.files += 1;
            status.bytes += size;
        }
        status.error_files = self.list(super::ERRORS_DIR)?.len() as u64;
        Ok(status)
    }

    /// The bytes of the object at `key`, a small one chorus writes beside
    /// the files (`.log`): one larger than `max` bytes is refused unread.
    pub fn read_small(&self, key: &str, max: u64) -> Result<Vec<u8>, ArchiveError> {
        self.block_on(async {
            let got = self.store.get(&self.path(key)).await.map_err(self.failed(key))?;
            if got.meta.size > max {
                return Err(ArchiveError::Other(format!(
                    "{}/{key} holds {} bytes, more than the {max} it may: not written by chorus",
                    self.url.as_str().trim_end_matches('/'),
                    got.meta.size
                )));
            }
            Ok(got.bytes().await.map_err(self.failed(key))?.to_vec())
        })
    }

    /// The bytes of the object at `key`.
    pub fn read(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        self.block_on(async {
            let got = self.store.get(&self.path(key)).await.map_err(self.failed(key))?;
            Ok(got.bytes().await.map_err(self.failed(key))?.to_vec())
        })
    }
}

/// Fills `buf` from `file` as far as it goes: the bytes read (0 at the end).
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            read => n += read,
        }
    }
    Ok(n)
}

#[doc(hidden)]
pub mod testing {
    //! A real S3-compatible server for tests: s3s-fs (built by
    //! `scripts/test.sh`, named by `CHORUS_TEST_S3S`), serving a temporary
    //! directory (a bucket is a directory in it), stopped with the test
    //! process.

    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;

    use super::ObjectArchive;

    /// Names the s3s-fs binary.
    pub const S3S_ENV: &str = "CHORUS_TEST_S3S";
    /// The server's access key (not a secret: a test server's).
    pub const ACCESS_KEY: &str = "chorus-test";
    /// Its secret key.
    pub const SECRET_KEY: &str = "chorus-test-secret";

    /// A running server; killed when dropped.
    pub struct S3Server {
        child: Child,
        /// `http://127.0.0.1:PORT`.
        pub endpoint: String,
        dir: PathBuf,
    }

    impl S3Server {
        /// Starts a server on a free port over `dir` (created) with an
        /// empty `bucket`, and waits until it answers. Panics (failing the
        /// test) when s3s-fs is not there: no test may skip for want of
        /// its peer.
        pub fn start(dir: &Path, bucket: &str) -> S3Server {
            let s3s = std::env::var(S3S_ENV).unwrap_or_else(|_| {
                panic!("{S3S_ENV} must name the s3s-fs binary; scripts/test.sh builds it and sets it")
            });
            let root = dir.join("objects");
            std::fs::create_dir_all(root.join(bucket)).unwrap();
            let address = format!("127.0.0.1:{}", crate::testing::free_port());
            let (host, port) = address.split_once(':').unwrap();
            let log = std::fs::File::create(dir.join("s3s.log")).unwrap();
            let mut command = Command::new(&s3s);
            command
                .args(["--host", host, "--port", port])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(&root)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            let child = crate::testing::spawn_tied(command).unwrap_or_else(|e| panic!("starting {s3s}: {e}"));
            crate::testing::wait_listening(&address, "s3s-fs", &dir.join("s3s.log"));
            S3Server {
                child,
                endpoint: format!("http://{address}"),
                dir: root,
            }
        }

        /// The directory holding the buckets (what the server stores).
        pub fn dir(&self) -> &Path {
            &self.dir
        }

        /// The environment a chorus process needs to reach the server.
        pub fn env(&self) -> [(&'static str, &'static str); 2] {
            [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)]
        }

        /// The archive at `url` (`s3://bucket/prefix`) on this server.
        pub fn archive(&self, url: &str) -> ObjectArchive {
            let url = url::Url::parse(url).unwrap();
            let store = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(url.host_str().unwrap())
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .with_region("us-east-1")
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .build()
                .unwrap();
            ObjectArchive::new(&url, Arc::new(store)).unwrap()
        }
    }

    impl Drop for S3Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
