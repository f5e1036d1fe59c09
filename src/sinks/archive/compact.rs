//! Compaction of closed hour partitions: the small files the sink rolled
//! into one hour's directory (one per roll and log partition, more for
//! posts sent again later) rewritten as one file, which is what a query
//! over a month opens instead of thousands.
//!
//! The swap is atomic for queries and safe across a crash. The new file is
//! written and synced under `.tmp`, with the names of the files it replaces
//! in its footer ([`REPLACES_KEY`]); then a journal (`.compaction.json`:
//! per swap the directory, the new file, the files it replaces) is written,
//! and the new file is renamed into the directory — the commit point. From
//! then on a query's listing leaves the replaced files out
//! ([`crate::query::files`]), in this process or another. They are moved
//! to `.retired/<run>/`, outside what SQL, DuckDB or Athena read, a second
//! ([`SWAP_GRACE`]) later: a directory listing that began before the new
//! file appeared has ended by then, so no listing misses both the new file
//! and the old ones (a listing of a directory being changed may or may not
//! show an entry added or removed meanwhile). A query that listed them
//! before the swap still reads them there ([`crate::query::files`]) until
//! they are removed after a grace period. A crash after the commit point is
//! finished at the next start or pass (the journal's sources still in the
//! directory are moved); before it, the directory was never touched.
//!
//! A compacted file is named `c-<run>.parquet`: not a `p<partition>-…` name,
//! so the start-up check for files renamed but never committed leaves it
//! alone (it holds only posts whose offsets were committed: the files are
//! listed under the gate, which the sink holds from rename to commit).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use super::{ArchiveConfig, ArchiveError, POSTS_DIR, TMP_DIR, create_dir_synced, io, sync_dir, writer_properties};
use crate::record::batch::schema;
use crate::wire::Compaction;

/// Where replaced files wait, under the archive root, until no query that
/// listed them can still be reading.
pub const RETIRED_DIR: &str = ".retired";
const JOURNAL: &str = ".compaction.json";
/// The key, in a compacted file's footer, of the names (a JSON array) of
/// the files it replaces in its directory.
pub const REPLACES_KEY: &str = "chorus.replaces";
/// How long replaced files stay beside the file that replaces them.
pub const SWAP_GRACE: Duration = Duration::from_secs(1);

/// The names the compacted file at `path` replaces (none if it says none).
pub fn replaced_by(path: &Path) -> Result<Vec<String>, String> {
    use parquet::file::reader::FileReader as _;
    let file = File::open(path).map_err(|e| e.to_string())?;
    let reader = parquet::file::reader::SerializedFileReader::new(file).map_err(|e| e.to_string())?;
    crate::query::files::names_in(reader.metadata().file_metadata().key_value_metadata())
}

/// The swap of one hour, as the journal records it.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    /// The hour's directory, relative to the archive root.
    dir: PathBuf,
    /// The compacted file's name in it.
    file: String,
    /// The names of the files it replaces.
    sources: Vec<String>,
    /// Where they go, relative to the archive root.
    retired: PathBuf,
}

/// One hour partition's directory.
struct Hour {
    /// Relative to the archive root.
    dir: PathBuf,
    /// When the hour ends, µs since the epoch.
    end: i64,
}

/// The hour partitions under `posts/` (`dt=…/hour=…` directories), oldest
/// first: each one's date, hour and directory relative to `root`.
pub fn hour_partitions(root: &Path) -> Result<Vec<(NaiveDate, u32, PathBuf)>, ArchiveError> {
    let posts = root.join(POSTS_DIR);
    let mut out = Vec::new();
    for (dt_name, dt_path) in subdirs(&posts)? {
        let Some(dt) = dt_name
            .strip_prefix("dt=")
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        else {
            continue;
        };
        for (hour_name, _) in subdirs(&dt_path)? {
            let Some(hour) = hour_name
                .strip_prefix("hour=")
                .and_then(|h| h.parse::<u32>().ok())
                .filter(|h| *h < 24)
            else {
                continue;
            };
            out.push((dt, hour, Path::new(POSTS_DIR).join(&dt_name).join(&hour_name)));
        }
    }
    out.sort_by(|a, b| a.2.cmp(&b.2));
    Ok(out)
}

/// The hour directories under `posts/`, oldest first.
fn hours(root: &Path) -> Result<Vec<Hour>, ArchiveError> {
    Ok(hour_partitions(root)?
        .into_iter()
        .filter_map(|(dt, hour, dir)| {
            let start = dt.and_hms_opt(hour, 0, 0)?;
            Some(Hour {
                dir,
                end: start.and_utc().timestamp_micros() + 3_600_000_000,
            })
        })
        .collect())
}

pub use crate::wire::Expired;

/// Retention: the hour partitions of posts that ended at or before
/// `cutoff` (µs) are retired (moved under `retired/<now>/`, where the
/// queries that listed them still read them, and removed with the other
/// retired files once no query can), and the dead letters of days that
/// ended by then removed.
pub fn expire(root: &Path, gate: &RwLock<()>, now: i64, cutoff: i64) -> Result<Expired, ArchiveError> {
    let mut expired = Expired::default();
    for hour in hours(root)?.into_iter().filter(|h| h.end <= cutoff) {
        let dir = root.join(&hour.dir);
        let names: Vec<String> = entries(&dir)?
            .iter()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        let retired = root.join(RETIRED_DIR).join(now.to_string()).join(&hour.dir);
        create_dir_synced(&retired)?;
        {
            let _gate = gate.blocking_write();
            for name in &names {
                let to = retired.join(name);
                fs::rename(dir.join(name), &to).map_err(io(&to))?;
            }
            fs::remove_dir(&dir).map_err(io(&dir))?;
        }
        sync_dir(&retired)?;
        if let Some(day) = dir.parent() {
            // The day's directory goes with its last hour.
            if entries(day)?.is_empty() {
                fs::remove_dir(day).map_err(io(day))?;
            }
            sync_dir(day.parent().unwrap_or(root))?;
        }
        expired.hours += 1;
        expired.files += names.len() as u64;
    }
    let cutoff_day = chrono::DateTime::from_timestamp_micros(cutoff).map(|t| t.date_naive());
    for (name, path) in subdirs(&root.join(super::ERRORS_DIR))? {
        let day = name
            .strip_prefix("dt=")
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        if let (Some(day), Some(cutoff_day)) = (day, cutoff_day)
            && day < cutoff_day
        {
            fs::remove_dir_all(&path).map_err(io(&path))?;
            expired.error_days += 1;
        }
    }
    if expired.error_days > 0 {
        sync_dir(&root.join(super::ERRORS_DIR))?;
    }
    Ok(expired)
}

/// The entries of `dir` (missing: none).
fn entries(dir: &Path) -> Result<Vec<fs::DirEntry>, ArchiveError> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.collect::<Result<_, _>>().map_err(io(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// The directories in `dir` (missing: none), by name.
fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, ArchiveError> {
    let mut out = Vec::new();
    for entry in entries(dir)? {
        let path = entry.path();
        if entry.file_type().map_err(io(&path))?.is_dir()
            && let Some(name) = entry.file_name().to_str()
        {
            out.push((name.to_string(), path));
        }
    }
    out.sort();
    Ok(out)
}

/// The Parquet files of a directory, by name, with their sizes.
fn parquet_files(dir: &Path) -> Result<Vec<(String, u64)>, ArchiveError> {
    let mut out = Vec::new();
    for entry in entries(dir)? {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.ends_with(".parquet") {
            let meta = entry.metadata().map_err(io(&entry.path()))?;
            if meta.is_file() {
                out.push((name, meta.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Rewrites each hour partition that ended at least `closed_for` before
/// `now` (µs) and holds at least `min_files` files as one file. Stops
/// between hours once `stop` is cancelled.
pub fn compact(
    root: &Path,
    config: &ArchiveConfig,
    gate: &RwLock<()>,
    now: i64,
    closed_for: Duration,
    min_files: usize,
    stop: &CancellationToken,
) -> Result<Compaction, ArchiveError> {
    // A pass an error cut short left swaps to finish.
    recover(root)?;
    let mut done = Compaction::default();
    let mut pending: Vec<(Journal, std::time::Instant)> = Vec::new();
    let closed_before = now.saturating_sub(i64::try_from(closed_for.as_micros()).unwrap_or(i64::MAX));
    let run = now;
    for hour in hours(root)? {
        if stop.is_cancelled() {
            break;
        }
        if hour.end > closed_before {
            continue;
        }
        let sources = {
            // Listed under the gate: every file in it is committed.
            let _gate = gate.blocking_read();
            parquet_files(&root.join(&hour.dir))?
        };
        if sources.len() < min_files.max(2) {
            continue;
        }
        retire_due(root, gate, &mut pending, SWAP_GRACE)?;
        match compact_hour(root, config, gate, (&hour.dir, &sources), run, &mut pending)? {
            Ok((rows, bytes)) => {
                done.hours += 1;
                done.files_before += sources.len() as u64;
                done.files_after += 1;
                done.rows += rows;
                done.bytes_before += sources.iter().map(|(_, len)| len).sum::<u64>();
                done.bytes_after += bytes;
            }
            Err(reason) => {
                tracing::warn!(dir = %hour.dir.display(), %reason, "An hour of the archive was not compacted.");
                done.skipped.push(format!("{}: {reason}", hour.dir.display()));
            }
        }
    }
    if let Some((_, at)) = pending.last() {
        std::thread::sleep(SWAP_GRACE.saturating_sub(at.elapsed()));
    }
    retire_due(root, gate, &mut pending, Duration::ZERO)?;
    Ok(done)
}

/// Retires the sources of the swaps in `pending` made at least `after`
/// ago, and writes the journal of the rest.
fn retire_due(
    root: &Path,
    gate: &RwLock<()>,
    pending: &mut Vec<(Journal, std::time::Instant)>,
    after: Duration,
) -> Result<(), ArchiveError> {
    let due = pending.iter().take_while(|(_, at)| at.elapsed() >= after).count();
    if due == 0 {
        return Ok(());
    }
    {
        let _gate = gate.blocking_write();
        for (journal, _) in &pending[..due] {
            retire(root, journal)?;
        }
    }
    pending.drain(..due);
    if pending.is_empty() {
        remove_journal(root)
    } else {
        write_journal(root, pending.iter().map(|(j, _)| j))
    }
}

/// Compacts one hour's `sources` (in `dir`) into a file put in place, its
/// swap added to `pending` (the sources are retired later): its rows and
/// the new file's bytes, or why it was left as it was.
fn compact_hour(
    root: &Path,
    config: &ArchiveConfig,
    gate: &RwLock<()>,
    (dir, sources): (&Path, &[(String, u64)]),
    run: i64,
    pending: &mut Vec<(Journal, std::time::Instant)>,
) -> Result<Result<(u64, u64), String>, ArchiveError> {
    let abs_dir = root.join(dir);
    let file = format!("c-{run:020}.parquet");
    let tmp_dir = root.join(TMP_DIR);
    fs::create_dir_all(&tmp_dir).map_err(io(&tmp_dir))?;
    let tmp = tmp_dir.join(format!(
        "compact-{}.parquet.tmp",
        dir.to_string_lossy().replace(['/', '='], "-")
    ));
    // A file that does not read, or reads other than its footer says,
    // leaves the hour as it is (and says why): nothing is lost.
    let (rows, bytes) = match write_compacted(&abs_dir, sources, &tmp, config) {
        Ok(done) => done,
        Err(reason) => {
            let _ = fs::remove_file(&tmp);
            return Ok(Err(reason));
        }
    };
    let journal = Journal {
        dir: dir.to_path_buf(),
        file: file.clone(),
        sources: sources.iter().map(|(name, _)| name.clone()).collect(),
        retired: Path::new(RETIRED_DIR).join(format!("{run:020}")).join(dir),
    };
    write_journal(root, pending.iter().map(|(j, _)| j).chain([&journal]))?;
    {
        let _gate = gate.blocking_write();
        let target = abs_dir.join(&file);
        fs::rename(&tmp, &target).map_err(io(&target))?;
        sync_dir(&abs_dir)?;
    }
    pending.push((journal, std::time::Instant::now()));
    Ok(Ok((rows, bytes)))
}

/// Writes the rows of `sources` (in `dir`) into `tmp`, synced: their
/// count and the file's bytes, or why not.
pub(super) fn write_compacted(
    dir: &Path,
    sources: &[(String, u64)],
    tmp: &Path,
    config: &ArchiveConfig,
) -> Result<(u64, u64), String> {
    let failed = |path: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let expected = schema();
    let out = File::create(tmp).map_err(|e| failed(tmp, &e))?;
    let props = writer_properties(config).map_err(|e| e.to_string())?;
    let mut writer = ArrowWriter::try_new(out, expected.clone(), Some(props)).map_err(|e| failed(tmp, &e))?;
    let (mut rows, mut expected_rows) = (0u64, 0u64);
    for (name, _) in sources {
        let path = dir.join(name);
        let file = File::open(&path).map_err(|e| failed(&path, &e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| failed(&path, &e))?;
        if builder.schema().fields() != expected.fields() {
            return Err(format!("{name} has columns of another layout"));
        }
        expected_rows += u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let reader = builder.with_batch_size(8192).build().map_err(|e| failed(&path, &e))?;
        for batch in reader {
            let batch = batch.map_err(|e| failed(&path, &e))?;
            let batch = batch.with_schema(expected.clone()).map_err(|e| failed(&path, &e))?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).map_err(|e| failed(tmp, &e))?;
        }
    }
    let names: Vec<&str> = sources.iter().map(|(name, _)| name.as_str()).collect();
    let names = serde_json::to_string(&names).map_err(|e| failed(tmp, &e))?;
    writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(REPLACES_KEY.to_string(), names));
    let out = writer.into_inner().map_err(|e| failed(tmp, &e))?;
    out.sync_all().map_err(|e| failed(tmp, &e))?;
    if rows != expected_rows {
        return Err(format!(
            "{}: read {rows} rows where the files' footers say {expected_rows}",
            dir.display()
        ));
    }
    let bytes = out.metadata().map_err(|e| failed(tmp, &e))?.len();
    Ok((rows, bytes))
}

/// Writes the journal of `swaps` (made or about to be, sources not retired).
fn write_journal<'a>(root: &Path, swaps: impl IntoIterator<Item = &'a Journal>) -> Result<(), ArchiveError> {
    let path = root.join(JOURNAL);
    let tmp = root.join(format!("{JOURNAL}.tmp"));
    let swaps: Vec<&Journal> = swaps.into_iter().collect();
    let text = serde_json::to_vec(&swaps).map_err(|e| io(&path)(std::io::Error::other(e)))?;
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    std::io::Write::write_all(&mut f, &text)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(root)
}

fn remove_journal(root: &Path) -> Result<(), ArchiveError> {
    let path = root.join(JOURNAL);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(root),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Moves the journal's sources still in its directory to its retired
/// directory.
fn retire(root: &Path, journal: &Journal) -> Result<(), ArchiveError> {
    let dir = root.join(&journal.dir);
    let retired = root.join(&journal.retired);
    create_dir_synced(&retired)?;
    for name in &journal.sources {
        let from = dir.join(name);
        if from.exists() {
            let to = retired.join(name);
            fs::rename(&from, &to).map_err(io(&to))?;
        }
    }
    sync_dir(&retired)?;
    sync_dir(&dir)
}

/// Finishes the swaps a crash (or an error) interrupted: past its commit
/// point (the new file in place), a swap's sources are retired; before it,
/// nothing changed. Called at start and before each pass.
pub fn recover(root: &Path) -> Result<(), ArchiveError> {
    let path = root.join(JOURNAL);
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&path)(e)),
    };
    // A list of swaps; a journal written before them held one.
    let swaps: Vec<Journal> = serde_json::from_slice(&text)
        .or_else(|_| serde_json::from_slice(&text).map(|one: Journal| vec![one]))
        .map_err(|e| {
            io(&path)(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a compaction journal ({e}); remove it once the archive is checked"),
            ))
        })?;
    for journal in &swaps {
        if root.join(&journal.dir).join(&journal.file).exists() {
            tracing::info!(dir = %journal.dir.display(), "Finishing a compaction a stop interrupted.");
            retire(root, journal)?;
        }
    }
    remove_journal(root)
}

/// Removes the files retired more than `grace` before `now` (µs); how many.
pub fn remove_retired(root: &Path, now: i64, grace: Duration) -> Result<u64, ArchiveError> {
    let grace = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
    let mut removed = 0;
    for (name, path) in subdirs(&root.join(RETIRED_DIR))? {
        let Ok(run) = name.parse::<i64>() else {
            continue;
        };
        if now.saturating_sub(run) >= grace {
            removed += super::files_under(&path)?.len() as u64;
            fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    if removed > 0 {
        sync_dir(&root.join(RETIRED_DIR))?;
    }
    Ok(removed)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::record::PostView;
    use crate::record::batch::to_record_batch;
    use arrow::array::{Array, StringArray};
    use arrow::record_batch::RecordBatch;

    pub(crate) const HOUR: i64 = 3_600_000_000;
    /// 2019-01-01T00:00:00Z.
    pub(crate) const DAY: i64 = 1_546_300_800_000_000;
    /// When the tests' passes run: 2019-01-01T05:30Z.
    pub(crate) const NOW: i64 = DAY + 5 * HOUR + HOUR / 2;

    /// Writes a post file of `ids` created at `at` into its hour's
    /// directory (named as the sink names files: partition, offsets).
    pub(crate) fn write_file(root: &Path, at: i64, first: u64, ids: &[&str]) {
        let bytes: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| {
                let incoming = crate::record::IncomingPost::new("reddit", id, "a good day", at);
                incoming
                    .into_post("a good day".into(), crate::enrich::score("a good day"), at + 1)
                    .to_log_bytes()
            })
            .collect();
        let views: Vec<PostView<'_>> = bytes.iter().map(|b| PostView::from_log_bytes(b).unwrap()).collect();
        let batch = to_record_batch(&views).unwrap();
        let (dt, hour) = crate::record::batch::partition_of_time(at);
        let dir = root.join(super::super::partition_dir(dt, hour));
        fs::create_dir_all(&dir).unwrap();
        let last = first + ids.len() as u64 - 1;
        let name = super::super::file_name(0, first, last, "parquet");
        let props = writer_properties(&ArchiveConfig::default()).unwrap();
        let mut writer = ArrowWriter::try_new(File::create(dir.join(name)).unwrap(), schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    /// The rows of the Parquet files in `dir`, in name order.
    fn rows(dir: &Path) -> Vec<RecordBatch> {
        parquet_files(dir)
            .unwrap()
            .iter()
            .flat_map(|(name, _)| {
                ParquetRecordBatchReaderBuilder::try_new(File::open(dir.join(name)).unwrap())
                    .unwrap()
                    .build()
                    .unwrap()
                    .map(Result::unwrap)
            })
            .collect()
    }

    pub(crate) fn ids(batches: &[RecordBatch]) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                let ids = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                (0..ids.len()).map(|i| ids.value(i).to_string()).collect::<Vec<_>>()
            })
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        parquet_files(dir).unwrap().into_iter().map(|(n, _)| n).collect()
    }

    fn hour_dir(root: &Path, hour: i64) -> PathBuf {
        let (dt, h) = crate::record::batch::partition_of_time(DAY + hour * HOUR);
        root.join(super::super::partition_dir(dt, h))
    }

    fn pass(root: &Path) -> Compaction {
        let gate = RwLock::new(());
        let config = ArchiveConfig::default();
        compact(
            root,
            &config,
            &gate,
            NOW,
            Duration::from_secs(3600),
            4,
            &CancellationToken::new(),
        )
        .unwrap()
    }

    /// Hour 0: five files; hour 1: two (too few); hour 4: five, but it
    /// ended less than an hour before `NOW`; hour 5: five, still open.
    pub(crate) fn archive() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (hour, files) in [(0, 5), (1, 2), (4, 5), (5, 5)] {
            for f in 0..files {
                let ids: Vec<String> = (0..3).map(|i| format!("t1_{hour}_{f}_{i}")).collect();
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                write_file(dir.path(), DAY + hour * HOUR + f as i64, f as u64 * 3, &ids);
            }
        }
        dir
    }

    #[test]
    fn a_closed_hour_becomes_one_file_with_the_same_rows_and_the_rest_is_left_alone() {
        let dir = archive();
        let root = dir.path();
        let before: Vec<Vec<String>> = [0, 1, 4, 5].iter().map(|h| names(&hour_dir(root, *h))).collect();
        let rows_before = rows(&hour_dir(root, 0));

        let done = pass(root);
        assert_eq!(
            (done.hours, done.files_before, done.files_after, done.rows),
            (1, 5, 1, 15),
            "{done:?}"
        );
        assert!(done.skipped.is_empty());
        assert!(done.bytes_after > 0 && done.bytes_before > done.bytes_after, "{done:?}");

        // One file, the same rows in the same order, every column equal.
        let after = names(&hour_dir(root, 0));
        assert_eq!(after, vec![format!("c-{NOW:020}.parquet")]);
        let rows_after = rows(&hour_dir(root, 0));
        let concat = |b: &[RecordBatch]| arrow::compute::concat_batches(&schema(), b).unwrap();
        assert_eq!(concat(&rows_after), concat(&rows_before));
        assert_eq!(ids(&rows_after).len(), 15);
        // Its footer names the files it replaced, for queries that list
        // the directory while both are there.
        assert_eq!(replaced_by(&hour_dir(root, 0).join(&after[0])).unwrap(), before[0]);

        // The replaced files wait under .retired, out of posts/.
        let retired = root
            .join(RETIRED_DIR)
            .join(format!("{NOW:020}"))
            .join(hour_dir(root, 0).strip_prefix(root).unwrap());
        assert_eq!(names(&retired), before[0]);
        // Too few files, closed too recently, open: untouched.
        for (i, h) in [1, 4, 5].iter().enumerate() {
            assert_eq!(names(&hour_dir(root, *h)), before[i + 1], "hour {h}");
        }
        // Nothing is left behind: no journal, no temporary file.
        assert!(!root.join(JOURNAL).exists());
        assert!(super::super::files_under(&root.join(TMP_DIR)).unwrap().is_empty());

        // A second pass finds nothing to do.
        assert_eq!(pass(root).hours, 0);

        // Retired files stay for the grace period, then go.
        assert_eq!(
            remove_retired(root, NOW + 59_000_000, Duration::from_secs(60)).unwrap(),
            0
        );
        assert_eq!(names(&retired).len(), 5);
        assert_eq!(
            remove_retired(root, NOW + 60_000_000, Duration::from_secs(60)).unwrap(),
            5
        );
        assert!(!root.join(RETIRED_DIR).join(format!("{NOW:020}")).exists());
    }

    #[test]
    fn late_files_are_compacted_again_with_the_compacted_one() {
        let dir = archive();
        let root = dir.path();
        pass(root);
        for f in 0..3u64 {
            write_file(root, DAY + 7, 100 + f, &[&format!("late_{f}")]);
        }
        let gate = RwLock::new(());
        let later = NOW + 1;
        let done = compact(
            root,
            &ArchiveConfig::default(),
            &gate,
            later,
            Duration::from_secs(3600),
            4,
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!((done.hours, done.files_before, done.rows), (1, 4, 18), "{done:?}");
        assert_eq!(names(&hour_dir(root, 0)), vec![format!("c-{later:020}.parquet")]);
        let mut got = ids(&rows(&hour_dir(root, 0)));
        got.sort();
        assert_eq!(got.len(), 18);
        assert!(got.contains(&"late_2".to_string()) && got.contains(&"t1_0_4_2".to_string()));
    }

    #[test]
    fn an_unreadable_file_leaves_its_hour_as_it_was_and_says_why() {
        let dir = archive();
        let root = dir.path();
        fs::write(
            hour_dir(root, 0).join("p1-000000000000-000000000009.parquet"),
            b"not parquet",
        )
        .unwrap();
        let before = names(&hour_dir(root, 0));
        let done = pass(root);
        assert_eq!(done.hours, 0);
        assert_eq!(done.skipped.len(), 1, "{done:?}");
        assert!(
            done.skipped[0].contains("hour=00") && done.skipped[0].contains("p1-000000000000-000000000009.parquet"),
            "{done:?}"
        );
        assert_eq!(names(&hour_dir(root, 0)), before);
        assert!(super::super::files_under(&root.join(TMP_DIR)).unwrap().is_empty());
        assert!(!root.join(JOURNAL).exists());
    }

    #[test]
    fn a_stop_past_the_commit_point_is_finished_and_one_before_it_changes_nothing() {
        let dir = archive();
        let root = dir.path();
        let rel = hour_dir(root, 0).strip_prefix(root).unwrap().to_path_buf();
        let sources = parquet_files(&hour_dir(root, 0)).unwrap();
        let source_names: Vec<String> = sources.iter().map(|(n, _)| n.clone()).collect();
        let journal = |run: i64| Journal {
            dir: rel.clone(),
            file: format!("c-{run:020}.parquet"),
            sources: source_names.clone(),
            retired: Path::new(RETIRED_DIR).join(format!("{run:020}")).join(&rel),
        };
        fs::create_dir_all(root.join(TMP_DIR)).unwrap();

        // Before: the new file written and journalled, never renamed.
        let tmp = root.join(TMP_DIR).join("compact.parquet.tmp");
        write_compacted(&hour_dir(root, 0), &sources, &tmp, &ArchiveConfig::default()).unwrap();
        // (A journal of one swap, as written before swaps were listed.)
        fs::write(root.join(JOURNAL), serde_json::to_vec(&journal(1)).unwrap()).unwrap();
        recover(root).unwrap();
        assert_eq!(names(&hour_dir(root, 0)), source_names);
        assert!(!root.join(JOURNAL).exists());

        // Past: the new file in place, the sources not yet moved (two of
        // them were). The archive's start finishes the swap.
        let j = journal(2);
        fs::rename(&tmp, hour_dir(root, 0).join(&j.file)).unwrap();
        write_journal(root, [&j]).unwrap();
        fs::create_dir_all(root.join(&j.retired)).unwrap();
        for name in &source_names[..2] {
            fs::rename(hour_dir(root, 0).join(name), root.join(&j.retired).join(name)).unwrap();
        }
        let log_dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn crate::log::Log> = Arc::new(crate::log::fjall::FjallLog::open(log_dir.path(), 1).unwrap());
        let _archive = super::super::Archive::open(
            super::super::Placement::Dir(root.to_path_buf()),
            log,
            ArchiveConfig::default(),
            Arc::new(crate::metrics::Metrics::default()),
            Arc::new(RwLock::new(())),
            Arc::new(super::super::ArchiveTail::default()),
        )
        .unwrap();
        assert_eq!(names(&hour_dir(root, 0)), vec![j.file.clone()]);
        assert_eq!(names(&root.join(&j.retired)), source_names);
        assert!(!root.join(JOURNAL).exists());
        assert_eq!(ids(&rows(&hour_dir(root, 0))).len(), 15);
    }

    #[test]
    fn a_journal_that_does_not_parse_stops_the_start_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(JOURNAL), b"{").unwrap();
        let e = recover(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(".compaction.json") && e.contains("not a compaction journal"),
            "{e}"
        );
    }

    #[test]
    fn retention_retires_the_hours_that_ended_before_the_cutoff_and_the_old_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_file(root, DAY - 38 * HOUR, 0, &["old"]);
        for hour in 0..3 {
            write_file(root, DAY + hour * HOUR, 10 + hour as u64, &["a", "b"]);
        }
        for day in ["2018-12-30", "2019-01-01"] {
            let errors = root.join(super::super::ERRORS_DIR).join(format!("dt={day}"));
            fs::create_dir_all(&errors).unwrap();
            fs::write(errors.join("p0-000000000000-000000000000.ndjson"), b"{}\n").unwrap();
        }
        let gate = RwLock::new(());
        // Kept: what ended after the cutoff (hours 1 and 2 of the day).
        let expired = expire(root, &gate, NOW, DAY + HOUR + HOUR / 2).unwrap();
        assert_eq!(
            expired,
            Expired {
                hours: 2,
                files: 2,
                error_days: 1
            }
        );
        let left: Vec<PathBuf> = hour_partitions(root).unwrap().into_iter().map(|(_, _, d)| d).collect();
        assert_eq!(
            left,
            [
                Path::new("posts/dt=2019-01-01/hour=01"),
                Path::new("posts/dt=2019-01-01/hour=02")
            ]
        );
        assert!(!root.join("posts/dt=2018-12-30").exists(), "an emptied day goes too");
        assert!(!root.join("errors/dt=2018-12-30").exists());
        assert!(root.join("errors/dt=2019-01-01").exists());
        // Retired where a query that listed them still finds them, then
        // removed with the other retired files.
        let retired = root.join(RETIRED_DIR).join(NOW.to_string());
        assert_eq!(ids(&rows(&retired.join("posts/dt=2018-12-30/hour=10"))), ["old"]);
        assert_eq!(ids(&rows(&retired.join("posts/dt=2019-01-01/hour=00"))), ["a", "b"]);
        assert_eq!(remove_retired(root, NOW + 1, Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(
            remove_retired(root, NOW + 2 * HOUR, Duration::from_secs(3600)).unwrap(),
            2
        );
        // Nothing more to do at the same cutoff.
        assert_eq!(
            expire(root, &gate, NOW, DAY + HOUR + HOUR / 2).unwrap(),
            Expired::default()
        );
    }
}
