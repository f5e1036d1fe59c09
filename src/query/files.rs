//! The archive's files as queries read them: the archive's store (the
//! local file system, or the bucket of an `s3://` archive), except that
//!
//! * a file compaction or retention retired after a query listed it is
//!   read from where it was retired ([`crate::sinks::archive::compact`]), so
//!   a query that was running across a compaction still reads what it
//!   listed;
//! * a listing leaves out what the query must not read twice: a post file
//!   whose first offset the archive had not committed when the query read
//!   its committed offsets (the query reads those posts from the log), and
//!   a file a compacted file in the same directory replaces (named in the
//!   compacted file's footer, [`crate::sinks::archive::compact::REPLACES_KEY`]).
//!
//! So a query process that is not the archive's (`chorus run --roles serve`)
//! gets the same snapshot as one beside it, from the offsets in the file
//! names and without the archive's in-process lock: it reads the committed
//! offsets, then lists; files placed after that start at or past those
//! offsets and are left out, files placed before are all in place (the
//! archive places a roll's files before it commits). One race remains,
//! detected: a compaction that, between the two, rewrote a file committed
//! after the query's offsets. [`ArchiveFiles::stale`] then says so and the
//! query is planned again.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use crate::sinks::archive::compact::{REPLACES_KEY, RETIRED_DIR};
use crate::sinks::archive::{POSTS_DIR, parse_file_name};

/// Compacted files whose replaced names are kept, at most (they never
/// change: a compacted file's name is unique).
const MAX_CACHED: usize = 4096;
/// Compacted files' footers read at once by one listing.
const FOOTERS_AT_ONCE: usize = 16;
/// The end of a file read in one request for its footer; a larger footer
/// takes a second.
const FOOTER_GUESS_BYTES: u64 = 64 * 1024;

/// The archive's store, with its retired files behind its own and its
/// listings cut to one query's snapshot.
#[derive(Debug, Clone)]
pub struct ArchiveFiles {
    shared: Arc<Shared>,
    /// Per log partition: the archive's committed offset the query read
    /// (none: every post file is listed).
    committed: Option<Arc<[u64]>>,
    /// Set when a listing found the archive changed past the snapshot.
    stale: Arc<AtomicBool>,
}

#[derive(Debug)]
struct Shared {
    inner: Arc<dyn ObjectStore>,
    /// The store's URL (`file:///`, `s3://bucket`): where queries find it.
    url: url::Url,
    /// The archive root in the store (on the local file system: as given
    /// and as resolved, since queries name files by either).
    roots: Vec<Path>,
    /// The archive's directory, when it is on the local file system.
    local_root: Option<std::path::PathBuf>,
    /// The names each compacted file replaces, by path.
    replaced: Mutex<HashMap<Path, Arc<[String]>>>,
}

impl ArchiveFiles {
    /// The archive in the local directory `root`.
    pub fn local(root: &std::path::Path) -> ArchiveFiles {
        let absolute = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let mut roots: Vec<Path> = Path::from_absolute_path(&absolute).into_iter().collect();
        if let Ok(resolved) = Path::from_filesystem_path(root)
            && !roots.contains(&resolved)
        {
            roots.push(resolved);
        }
        let mut files = ArchiveFiles::with(
            Arc::new(LocalFileSystem::new()),
            url::Url::parse("file:///").expect("a URL"),
            roots,
        );
        if let Some(shared) = Arc::get_mut(&mut files.shared) {
            shared.local_root = Some(absolute);
        }
        files
    }

    /// The archive at `url` (`s3://bucket/prefix`) in `store`, whose root
    /// is `url`'s bucket.
    pub fn objects(url: &url::Url, store: Arc<dyn ObjectStore>) -> ArchiveFiles {
        let mut bucket = url.clone();
        bucket.set_path("");
        ArchiveFiles::with(store, bucket, vec![Path::from(url.path().trim_matches('/'))])
    }

    fn with(inner: Arc<dyn ObjectStore>, url: url::Url, roots: Vec<Path>) -> ArchiveFiles {
        ArchiveFiles {
            shared: Arc::new(Shared {
                inner,
                url,
                roots,
                local_root: None,
                replaced: Mutex::new(HashMap::new()),
            }),
            committed: None,
            stale: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the archive is a local directory.
    pub fn is_local(&self) -> bool {
        self.shared.local_root.is_some()
    }

    /// The store's URL, under which queries register it.
    pub fn store_url(&self) -> &url::Url {
        &self.shared.url
    }

    /// The URL of the directory `dir` (`/`-separated) under the archive,
    /// ending in `/`: what a listing table over it is given.
    pub fn dir_url(&self, dir: &str) -> String {
        if let Some(local) = &self.shared.local_root {
            return format!("{}/", local.join(dir).display());
        }
        let root = self.shared.roots.first().cloned().unwrap_or_default();
        let path: Path = root.parts().chain(Path::from(dir).parts()).collect();
        format!("{}/{path}/", self.shared.url.as_str().trim_end_matches('/'))
    }

    /// The same files as one query sees them: post files from `committed`
    /// on (per log partition) left out.
    pub fn snapshot(&self, committed: &[u64]) -> ArchiveFiles {
        ArchiveFiles {
            shared: self.shared.clone(),
            committed: Some(committed.into()),
            stale: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a listing found a compacted file holding posts past the
    /// snapshot's offsets: the query must read the offsets again.
    pub fn stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// The archive root `location` is under and its parts below it.
    fn under_root(&self, location: &Path) -> Option<(Path, Vec<String>)> {
        self.shared.roots.iter().find_map(|root| {
            let parts: Vec<String> = location.prefix_match(root)?.map(|p| p.as_ref().to_string()).collect();
            Some((root.clone(), parts))
        })
    }

    /// Whether `location` is a post file of this archive.
    fn is_post_file(&self, location: &Path) -> bool {
        self.under_root(location)
            .is_some_and(|(_, parts)| parts.first().is_some_and(|p| p == POSTS_DIR))
    }

    /// Where `location`, a post file no longer in place, was retired to
    /// (the newest retirement first), if it was.
    async fn retired(&self, location: &Path) -> Option<Path> {
        let (root, relative) = self.under_root(location)?;
        if relative.first().is_none_or(|p| p != POSTS_DIR) {
            return None;
        }
        let retired: Path = root.parts().chain(Path::from(RETIRED_DIR).parts()).collect();
        let mut runs = self
            .shared
            .inner
            .list_with_delimiter(Some(&retired))
            .await
            .ok()?
            .common_prefixes;
        runs.sort();
        for run in runs.iter().rev() {
            let candidate: Path = run
                .parts()
                .chain(relative.iter().map(|p| object_store::path::PathPart::from(p.as_str())))
                .collect();
            if self.shared.inner.head(&candidate).await.is_ok() {
                return Some(candidate);
            }
        }
        None
    }

    /// The names the compacted file `object` replaces (read from its
    /// footer once). One that does not read replaces nothing: the query
    /// that reads it says why.
    async fn replaced(&self, object: &ObjectMeta) -> Arc<[String]> {
        let cached = self
            .shared
            .replaced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&object.location)
            .cloned();
        if let Some(names) = cached {
            return names;
        }
        let names: Arc<[String]> = match replaced_in(&*self.shared.inner, &object.location, object.size).await {
            Ok(names) => names.into(),
            Err(e) => {
                tracing::debug!(file = %object.location, error = %e, "A compacted file's footer does not read.");
                return Arc::from(Vec::new());
            }
        };
        let mut cache = self.shared.replaced.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(object.location.clone(), names.clone());
        names
    }

    /// `objects` without what this snapshot must not read (see the module
    /// documentation).
    async fn kept(&self, objects: Vec<ObjectMeta>) -> Result<Vec<ObjectMeta>> {
        // Per directory: the names compacted files in it replace.
        let compacted: Vec<ObjectMeta> = objects
            .iter()
            .filter(|o| o.location.filename().is_some_and(|n| n.starts_with("c-")) && self.is_post_file(&o.location))
            .cloned()
            .collect();
        let found: Vec<(String, Arc<[String]>)> = futures::stream::iter(compacted)
            .map(|o| {
                let this = self.clone();
                async move { (dir_of(&o.location).to_string(), this.replaced(&o).await) }
            })
            .buffer_unordered(FOOTERS_AT_ONCE)
            .collect()
            .await;
        let mut replaced: HashMap<String, HashSet<String>> = HashMap::new();
        for (dir, names) in found {
            for name in names.iter() {
                if let (Some(committed), Some((p, first, _))) = (&self.committed, parse_file_name(name))
                    && committed.get(p as usize).is_some_and(|c| first >= *c)
                {
                    self.stale.store(true, Ordering::Relaxed);
                }
            }
            replaced.entry(dir).or_default().extend(names.iter().cloned());
        }
        Ok(objects
            .into_iter()
            .filter(|object| {
                if !self.is_post_file(&object.location) {
                    return true;
                }
                let Some(name) = object.location.filename() else {
                    return true;
                };
                if replaced
                    .get(dir_of(&object.location))
                    .is_some_and(|names| names.contains(name))
                {
                    return false;
                }
                match (&self.committed, parse_file_name(name)) {
                    (Some(committed), Some((p, first, _))) => committed.get(p as usize).is_none_or(|c| first < *c),
                    _ => true,
                }
            })
            .collect())
    }

    /// A listing of `inner`, cut by [`Self::kept`].
    fn cut(&self, inner: BoxStream<'static, Result<ObjectMeta>>) -> BoxStream<'static, Result<ObjectMeta>> {
        let this = self.clone();
        futures::stream::once(async move {
            let all: Vec<ObjectMeta> = inner.try_collect().await?;
            let kept = this.kept(all).await?;
            Ok::<_, object_store::Error>(futures::stream::iter(kept.into_iter().map(Ok)))
        })
        .try_flatten()
        .boxed()
    }
}

/// The directory part of `location` (before its last `/`).
fn dir_of(location: &Path) -> &str {
    location.as_ref().rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The names the compacted file at `location` (of `size` bytes) in `store`
/// replaces, from its footer (none if it names none).
pub async fn replaced_in(
    store: &dyn ObjectStore,
    location: &Path,
    size: u64,
) -> std::result::Result<Vec<String>, String> {
    if size < 12 {
        return Err(format!("{location}: {size} bytes is no Parquet file"));
    }
    let start = size.saturating_sub(FOOTER_GUESS_BYTES);
    let mut tail = store
        .get_range(location, start..size)
        .await
        .map_err(|e| e.to_string())?;
    let n = tail.len();
    if n < 8 || &tail[n - 4..] != b"PAR1" {
        return Err(format!("{location}: not a Parquet file"));
    }
    let footer = u32::from_le_bytes(tail[n - 8..n - 4].try_into().expect("4 bytes")) as u64;
    if footer + 8 > size {
        return Err(format!("{location}: a footer of {footer} bytes in a file of {size}"));
    }
    if footer + 8 > n as u64 {
        tail = store
            .get_range(location, size - 8 - footer..size)
            .await
            .map_err(|e| e.to_string())?;
    }
    let n = tail.len();
    let metadata =
        parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&tail[n - 8 - footer as usize..n - 8])
            .map_err(|e| format!("{location}: {e}"))?;
    names_in(metadata.file_metadata().key_value_metadata())
}

/// The replaced names a footer's key-value metadata holds.
pub fn names_in(kv: Option<&Vec<parquet::file::metadata::KeyValue>>) -> std::result::Result<Vec<String>, String> {
    match kv
        .and_then(|kv| kv.iter().find(|kv| kv.key == REPLACES_KEY))
        .and_then(|kv| kv.value.as_deref())
    {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("{REPLACES_KEY}: {e}")),
        None => Ok(Vec::new()),
    }
}

impl fmt::Display for ArchiveFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArchiveFiles({})", self.shared.inner)
    }
}

fn not_found<T>(result: &Result<T>) -> bool {
    matches!(result, Err(object_store::Error::NotFound { .. }))
}

#[async_trait]
impl ObjectStore for ArchiveFiles {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.shared.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.shared.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let got = self.shared.inner.get_opts(location, options.clone()).await;
        if not_found(&got)
            && let Some(retired) = self.retired(location).await
        {
            return self.shared.inner.get_opts(&retired, options).await;
        }
        got
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let got = self.shared.inner.get_ranges(location, ranges).await;
        if not_found(&got)
            && let Some(retired) = self.retired(location).await
        {
            return self.shared.inner.get_ranges(&retired, ranges).await;
        }
        got
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.shared.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.cut(self.shared.inner.list(prefix))
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.cut(self.shared.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut listed = self.shared.inner.list_with_delimiter(prefix).await?;
        listed.objects = self.kept(std::mem::take(&mut listed.objects)).await?;
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.shared.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.shared.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn a_file_retired_after_it_was_listed_is_still_read_and_a_missing_one_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("archive");
        let hour = Path::from("posts/dt=2019-01-01/hour=00");
        let in_place = root.join("posts/dt=2019-01-01/hour=00");
        std::fs::create_dir_all(&in_place).unwrap();
        std::fs::write(in_place.join("p0-1-2.parquet"), b"first version").unwrap();
        let store = ArchiveFiles::local(&root);
        let location = Path::from_filesystem_path(in_place.join("p0-1-2.parquet")).unwrap();
        let listed: Vec<ObjectMeta> =
            futures::StreamExt::collect::<Vec<_>>(store.list(Some(&Path::from_filesystem_path(&in_place).unwrap())))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].location.as_ref().ends_with(&format!("{hour}/p0-1-2.parquet")));

        // Retired twice (an older run's copy must not win), then read.
        for (run, text) in [
            ("00000000000000000001", "older"),
            ("00000000000000000002", "first version"),
        ] {
            let to = root.join(RETIRED_DIR).join(run).join("posts/dt=2019-01-01/hour=00");
            std::fs::create_dir_all(&to).unwrap();
            std::fs::write(to.join("p0-1-2.parquet"), text).unwrap();
        }
        std::fs::remove_file(in_place.join("p0-1-2.parquet")).unwrap();
        let got = store.get(&location).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"first version");
        let ranges = store.get_ranges(&location, &[0..5, 6..13]).await.unwrap();
        assert_eq!((&ranges[0][..], &ranges[1][..]), (&b"first"[..], &b"version"[..]));

        // Never there, or outside posts/: not found, as before.
        for missing in ["posts/dt=2019-01-01/hour=00/p0-3-4.parquet", "views/x/data.parquet"] {
            let location = Path::from_absolute_path(std::path::absolute(root.join(missing)).unwrap()).unwrap();
            let e = store.get(&location).await.unwrap_err();
            assert!(matches!(e, object_store::Error::NotFound { .. }), "{e}");
        }
    }

    /// Writes a Parquet file at `path` (one row), naming `replaces` in its
    /// footer as a compaction does.
    fn write_parquet(path: &std::path::Path, replaces: Option<&[&str]>) {
        use arrow::array::{Int32Array, RecordBatch};
        let batch = RecordBatch::try_from_iter([("x", Arc::new(Int32Array::from(vec![1])) as _)]).unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        if let Some(names) = replaces {
            writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
                crate::sinks::archive::compact::REPLACES_KEY.to_string(),
                serde_json::to_string(names).unwrap(),
            ));
        }
        writer.close().unwrap();
    }

    async fn listed(store: &ArchiveFiles, dir: &std::path::Path) -> Vec<String> {
        let prefix = Path::from_filesystem_path(dir).unwrap();
        let mut names: Vec<String> = futures::StreamExt::collect::<Vec<_>>(store.list(Some(&prefix)))
            .await
            .into_iter()
            .map(|m| m.unwrap().location.filename().unwrap().to_string())
            .collect();
        names.sort();
        let mut by_dir: Vec<String> = store
            .list_with_delimiter(Some(&prefix))
            .await
            .unwrap()
            .objects
            .into_iter()
            .map(|m| m.location.filename().unwrap().to_string())
            .collect();
        by_dir.sort();
        assert_eq!(names, by_dir, "both listings cut alike");
        names
    }

    #[tokio::test]
    async fn a_snapshot_lists_what_was_committed_and_a_compacted_file_instead_of_what_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("archive");
        let hour = root.join("posts/dt=2019-01-01/hour=00");
        std::fs::create_dir_all(&hour).unwrap();
        for name in [
            "p0-000000000000-000000000009.parquet",
            "p0-000000000010-000000000019.parquet",
        ] {
            write_parquet(&hour.join(name), None);
        }
        write_parquet(&hour.join("p1-000000000000-000000000004.parquet"), None);
        let store = ArchiveFiles::local(&root);
        let all = listed(&store, &hour).await;
        assert_eq!(all.len(), 3);

        // Partition 0 committed up to 10, partition 1 up to 5: the second
        // file of partition 0 was renamed after the offsets were read.
        let snapshot = store.snapshot(&[10, 5]);
        assert_eq!(
            listed(&snapshot, &hour).await,
            [
                "p0-000000000000-000000000009.parquet",
                "p1-000000000000-000000000004.parquet"
            ]
        );
        assert!(!snapshot.stale());

        // A compaction put its file in place; the files it replaced are
        // still beside it for a moment: only the compacted one is listed.
        write_parquet(
            &hour.join("c-00000000000000000001.parquet"),
            Some(&[
                "p0-000000000000-000000000009.parquet",
                "p1-000000000000-000000000004.parquet",
            ]),
        );
        let snapshot = store.snapshot(&[10, 5]);
        assert_eq!(listed(&snapshot, &hour).await, ["c-00000000000000000001.parquet"]);
        assert!(!snapshot.stale());
        assert_eq!(
            listed(&store, &hour).await,
            [
                "c-00000000000000000001.parquet",
                "p0-000000000000-000000000010-000000000019.parquet"
            ][..1]
                .iter()
                .map(|s| s.to_string())
                .chain(["p0-000000000010-000000000019.parquet".to_string()])
                .collect::<Vec<_>>()
        );

        // Compacted again with the later file, which this older snapshot
        // had not seen committed: it must read its offsets again.
        write_parquet(
            &hour.join("c-00000000000000000002.parquet"),
            Some(&["c-00000000000000000001.parquet", "p0-000000000010-000000000019.parquet"]),
        );
        let old = store.snapshot(&[10, 5]);
        assert_eq!(listed(&old, &hour).await, ["c-00000000000000000002.parquet"]);
        assert!(old.stale(), "a compacted file holding posts past the snapshot");
        let fresh = store.snapshot(&[20, 5]);
        assert_eq!(listed(&fresh, &hour).await, ["c-00000000000000000002.parquet"]);
        assert!(!fresh.stale());
    }
}
