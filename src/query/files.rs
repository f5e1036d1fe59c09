//! The archive's files as queries read them: the local file system, except
//! that
//!
//! * a file compaction retired after a query listed it is read from where
//!   it was retired ([`crate::sinks::archive::compact`]), so a query that
//!   was running across a compaction still reads what it listed;
//! * a listing leaves out what the query must not read twice: a post file
//!   whose first offset the archive had not committed when the query read
//!   its committed offsets (the query reads those posts from the log), and
//!   a file a compacted file in the same directory replaces (named in the
//!   compacted file's footer, [`crate::sinks::archive::compact::REPLACES_KEY`]).
//!
//! So a query process that is not the archive's (`chorus run --roles serve`)
//! gets the same snapshot as one beside it, from the offsets in the file
//! names and without the archive's in-process lock: it reads the committed
//! offsets, then lists; files renamed after that start at or past those
//! offsets and are left out, files renamed before are all in place (the
//! archive renames a roll's files before it commits). One race remains,
//! detected: a compaction that, between the two, rewrote a file committed
//! after the query's offsets. [`ArchiveFiles::stale`] then says so and the
//! query is planned again.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use crate::sinks::archive::compact::{RETIRED_DIR, replaced_by};
use crate::sinks::archive::{POSTS_DIR, parse_file_name};

/// Compacted files whose replaced names are kept, at most (they never
/// change: a compacted file's name is unique).
const MAX_CACHED: usize = 4096;

/// The local file system, with an archive's retired files behind its own
/// and its listings cut to one query's snapshot.
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
    local: LocalFileSystem,
    /// The archive root as given and as resolved (queries name files by
    /// either).
    roots: Vec<PathBuf>,
    /// The names each compacted file replaces, by path.
    replaced: Mutex<HashMap<PathBuf, Arc<[String]>>>,
}

impl ArchiveFiles {
    /// The local file system, for the archive at `root`.
    pub fn new(root: &std::path::Path) -> ArchiveFiles {
        let mut roots = vec![std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf())];
        if let Ok(resolved) = std::fs::canonicalize(root)
            && !roots.contains(&resolved)
        {
            roots.push(resolved);
        }
        ArchiveFiles {
            shared: Arc::new(Shared {
                local: LocalFileSystem::new(),
                roots,
                replaced: Mutex::new(HashMap::new()),
            }),
            committed: None,
            stale: Arc::new(AtomicBool::new(false)),
        }
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

    /// Where `location`, a post file no longer in place, was retired to
    /// (the newest retirement first), if it was.
    fn retired(&self, location: &Path) -> Option<Path> {
        let file = self.shared.local.path_to_filesystem(location).ok()?;
        let (root, relative) = self.shared.roots.iter().find_map(|root| {
            let relative = file.strip_prefix(root).ok()?;
            relative.starts_with(POSTS_DIR).then_some((root, relative))
        })?;
        let retired = root.join(RETIRED_DIR);
        let mut runs: Vec<PathBuf> = std::fs::read_dir(&retired)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        runs.sort();
        runs.iter()
            .rev()
            .map(|run| run.join(relative))
            .find(|candidate| candidate.is_file())
            .and_then(|found| Path::from_filesystem_path(found).ok())
    }

    /// Whether `file` is a post file of this archive.
    fn is_post_file(&self, file: &std::path::Path) -> bool {
        self.shared.roots.iter().any(|root| {
            file.strip_prefix(root)
                .is_ok_and(|relative| relative.starts_with(POSTS_DIR))
        })
    }

    /// The names the compacted file at `file` replaces (read from its
    /// footer once). One that does not read replaces nothing: the query
    /// that reads it says why.
    fn replaced(&self, file: &std::path::Path) -> Arc<[String]> {
        if let Some(names) = self.shared.replaced.lock().unwrap_or_else(|e| e.into_inner()).get(file) {
            return names.clone();
        }
        let names: Arc<[String]> = match replaced_by(file) {
            Ok(names) => names.into(),
            Err(e) => {
                tracing::debug!(file = %file.display(), error = %e, "A compacted file's footer does not read.");
                return Arc::from(Vec::new());
            }
        };
        let mut cache = self.shared.replaced.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(file.to_path_buf(), names.clone());
        names
    }

    /// `objects` without what this snapshot must not read (see the module
    /// documentation). Reads compacted files' footers: call off the async
    /// threads.
    fn keep(&self, objects: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
        // Per directory: the names compacted files in it replace.
        let mut replaced: HashMap<PathBuf, HashSet<String>> = HashMap::new();
        let mut files = Vec::with_capacity(objects.len());
        for object in objects {
            let file = self.shared.local.path_to_filesystem(&object.location).ok();
            let file = file.filter(|f| self.is_post_file(f));
            if let Some(file) = &file
                && let (Some(dir), Some(name)) = (file.parent(), file.file_name().and_then(|n| n.to_str()))
                && name.starts_with("c-")
            {
                let names = self.replaced(file);
                for name in names.iter() {
                    if let (Some(committed), Some((p, first, _))) = (&self.committed, parse_file_name(name))
                        && committed.get(p as usize).is_some_and(|c| first >= *c)
                    {
                        self.stale.store(true, Ordering::Relaxed);
                    }
                }
                replaced
                    .entry(dir.to_path_buf())
                    .or_default()
                    .extend(names.iter().cloned());
            }
            files.push((object, file));
        }
        files
            .into_iter()
            .filter(|(_, file)| {
                let Some(file) = file else {
                    return true;
                };
                let (Some(dir), Some(name)) = (file.parent(), file.file_name().and_then(|n| n.to_str())) else {
                    return true;
                };
                if replaced.get(dir).is_some_and(|names| names.contains(name)) {
                    return false;
                }
                match (&self.committed, parse_file_name(name)) {
                    (Some(committed), Some((p, first, _))) => committed.get(p as usize).is_none_or(|c| first < *c),
                    _ => true,
                }
            })
            .map(|(object, _)| object)
            .collect()
    }

    /// [`Self::keep`], on a blocking thread when it may read footers.
    async fn kept(&self, objects: Vec<ObjectMeta>) -> Result<Vec<ObjectMeta>> {
        if !objects
            .iter()
            .any(|o| o.location.filename().is_some_and(|n| n.starts_with("c-")))
        {
            return Ok(self.keep(objects));
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.keep(objects))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "ArchiveFiles",
                source: Box::new(e),
            })
    }

    /// A listing of `inner`, cut by [`Self::keep`].
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

impl fmt::Display for ArchiveFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArchiveFiles({})", self.shared.local)
    }
}

fn not_found<T>(result: &Result<T>) -> bool {
    matches!(result, Err(object_store::Error::NotFound { .. }))
}

#[async_trait]
impl ObjectStore for ArchiveFiles {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.shared.local.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.shared.local.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let got = self.shared.local.get_opts(location, options.clone()).await;
        if not_found(&got)
            && let Some(retired) = self.retired(location)
        {
            return self.shared.local.get_opts(&retired, options).await;
        }
        got
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let got = self.shared.local.get_ranges(location, ranges).await;
        if not_found(&got)
            && let Some(retired) = self.retired(location)
        {
            return self.shared.local.get_ranges(&retired, ranges).await;
        }
        got
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.shared.local.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.cut(self.shared.local.list(prefix))
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.cut(self.shared.local.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut listed = self.shared.local.list_with_delimiter(prefix).await?;
        listed.objects = self.kept(std::mem::take(&mut listed.objects)).await?;
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.shared.local.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.shared.local.rename_opts(from, to, options).await
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
        let store = ArchiveFiles::new(&root);
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
        let store = ArchiveFiles::new(&root);
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
