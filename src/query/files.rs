//! The archive's files as queries read them: the local file system, except
//! that a file compaction retired after a query listed it is read from
//! where it was retired ([`crate::sinks::archive::compact`]), so a query
//! that was running across a compaction still reads what it listed.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use crate::sinks::archive::{POSTS_DIR, compact::RETIRED_DIR};

/// The local file system, with an archive's retired files behind its own.
#[derive(Debug)]
pub struct ArchiveFiles {
    local: LocalFileSystem,
    /// The archive root as given and as resolved (queries name files by
    /// either).
    roots: Vec<PathBuf>,
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
            local: LocalFileSystem::new(),
            roots,
        }
    }

    /// Where `location`, a post file no longer in place, was retired to
    /// (the newest retirement first), if it was.
    fn retired(&self, location: &Path) -> Option<Path> {
        let file = self.local.path_to_filesystem(location).ok()?;
        let (root, relative) = self.roots.iter().find_map(|root| {
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
}

impl fmt::Display for ArchiveFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArchiveFiles({})", self.local)
    }
}

fn not_found<T>(result: &Result<T>) -> bool {
    matches!(result, Err(object_store::Error::NotFound { .. }))
}

#[async_trait]
impl ObjectStore for ArchiveFiles {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.local.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.local.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let got = self.local.get_opts(location, options.clone()).await;
        if not_found(&got)
            && let Some(retired) = self.retired(location)
        {
            return self.local.get_opts(&retired, options).await;
        }
        got
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let got = self.local.get_ranges(location, ranges).await;
        if not_found(&got)
            && let Some(retired) = self.retired(location)
        {
            return self.local.get_ranges(&retired, ranges).await;
        }
        got
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.local.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.local.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.local.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.local.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.local.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.local.rename_opts(from, to, options).await
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
}
