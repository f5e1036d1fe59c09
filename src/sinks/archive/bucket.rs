//! The lifecycle of an archive in a bucket (`[archive] url = "s3://…"`):
//! compaction and retention, as [`super::compact`] does them on disk, with
//! what an object store offers (no rename, no directory).
//!
//! * **Compaction.** A closed hour's files are read (each downloaded to the
//!   staging directory), written as one file with the names it replaces in
//!   its footer, and that file is put beside them: the commit point. A PUT
//!   is atomic, and from then on every query's listing leaves the replaced
//!   files out ([`crate::query::files`]), in this process or another. A
//!   second later ([`SWAP_GRACE`]: a listing that began before the PUT has
//!   ended) they are retired as below, out of what Athena or DuckDB read;
//!   a query that listed them before still reads them there. A crash after
//!   the PUT is finished by the next pass (a compacted file's replaced
//!   files still in place are retired); before it, nothing changed.
//!   Replaced files are retired before the compacted file naming them, so
//!   a file compacted twice never shows again.
//! * **Retention.** An hour past `archive_retention_days` is copied under
//!   `.retired/<run>/` (a copy inside the store), then deleted, so a query
//!   that listed it still reads it there; retired copies are deleted once
//!   no query can be reading them. Days of dead letters past it are
//!   deleted.
//!
//! Only committed files are compacted: the listing is taken under the
//! archive's gate, which the sink holds from a file's PUT to its commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use chrono::NaiveDate;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use super::compact::{RETIRED_DIR, SWAP_GRACE, write_compacted};
use super::objects::{Object, ObjectArchive};
use super::{ArchiveConfig, ArchiveError, ERRORS_DIR, POSTS_DIR, TMP_DIR, io};
use crate::wire::{Compaction, Expired};

/// A compacted file's name starts so (see [`super::compact`]).
const COMPACTED: &str = "c-";

/// The hour directory (`posts/dt=…/hour=…`) of a post file's key, and
/// when that hour ends (µs).
fn hour_of(key: &str) -> Option<(&str, i64)> {
    let (dir, _) = key.rsplit_once('/')?;
    let mut parts = dir.split('/');
    if parts.next()? != POSTS_DIR {
        return None;
    }
    let dt = NaiveDate::parse_from_str(parts.next()?.strip_prefix("dt=")?, "%Y-%m-%d").ok()?;
    let hour: u32 = parts.next()?.strip_prefix("hour=")?.parse().ok().filter(|h| *h < 24)?;
    if parts.next().is_some() {
        return None;
    }
    let start = dt.and_hms_opt(hour, 0, 0)?.and_utc().timestamp_micros();
    Some((dir, start + 3_600_000_000))
}

/// The hour partitions under the bucket's `posts/` that hold files, oldest
/// first.
pub fn hours(store: &ObjectArchive) -> Result<Vec<(NaiveDate, u32)>, ArchiveError> {
    let mut out: Vec<(NaiveDate, u32)> = by_hour(store.list_objects(POSTS_DIR)?)
        .into_values()
        .filter_map(|(end, _)| {
            let start = chrono::DateTime::from_timestamp_micros(end - 3_600_000_000)?;
            Some((start.date_naive(), chrono::Timelike::hour(&start)))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The post files under `posts/`, by hour directory.
fn by_hour(objects: Vec<Object>) -> BTreeMap<String, (i64, Vec<Object>)> {
    let mut hours: BTreeMap<String, (i64, Vec<Object>)> = BTreeMap::new();
    for object in objects {
        if !object.key.ends_with(".parquet") {
            continue;
        }
        let Some((dir, end)) = hour_of(&object.key).map(|(d, e)| (d.to_string(), e)) else {
            continue;
        };
        hours.entry(dir).or_insert_with(|| (end, Vec::new())).1.push(object);
    }
    hours
}

fn name_of(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, name)| name)
}

/// The names the compacted files among `files` replace, per compacted
/// file. One whose footer does not read replaces nothing (its queries say
/// why).
fn replacements(store: &ObjectArchive, files: &[Object]) -> HashMap<String, Vec<String>> {
    let compacted: Vec<(String, u64)> = files
        .iter()
        .filter(|o| name_of(&o.key).starts_with(COMPACTED))
        .map(|o| (o.key.clone(), o.size))
        .collect();
    store
        .replaced_all(&compacted)
        .into_iter()
        .map(|(key, names)| {
            let names = names.unwrap_or_else(|e| {
                tracing::warn!(%key, error = %e, "A compacted file's footer does not read.");
                Vec::new()
            });
            (name_of(&key).to_string(), names)
        })
        .collect()
}

/// Compacts each hour partition that ended at least `closed_for` before
/// `now` (µs) and holds at least `min_files` files queries read (those a
/// compacted file replaces are not counted). Files are staged in
/// `staging`. Stops between hours once `stop` is cancelled.
pub fn compact(
    store: &ObjectArchive,
    staging: &Path,
    (config, gate): (&ArchiveConfig, &RwLock<()>),
    now: i64,
    (closed_for, min_files): (Duration, usize),
    stop: &CancellationToken,
) -> Result<Compaction, ArchiveError> {
    // Swaps a stop interrupted after their commit point.
    retire_replaced(store, SWAP_GRACE)?;
    let mut done = Compaction::default();
    let closed_before = now.saturating_sub(i64::try_from(closed_for.as_micros()).unwrap_or(i64::MAX));
    let listed = {
        // Listed under the gate: every post file in it is committed.
        let _gate = gate.blocking_read();
        store.list_objects(POSTS_DIR)?
    };
    let work = staging.join(TMP_DIR).join("compact");
    for (dir, (end, files)) in by_hour(listed) {
        if stop.is_cancelled() {
            break;
        }
        if end > closed_before {
            continue;
        }
        let replaced: HashSet<String> = replacements(store, &files).into_values().flatten().collect();
        let live: Vec<&Object> = files.iter().filter(|o| !replaced.contains(name_of(&o.key))).collect();
        if live.len() < min_files.max(2) {
            continue;
        }
        match compact_hour(store, config, &work, (&dir, &live), now) {
            Ok(Ok((rows, bytes))) => {
                done.hours += 1;
                done.files_before += live.len() as u64;
                done.files_after += 1;
                done.rows += rows;
                done.bytes_before += live.iter().map(|o| o.size).sum::<u64>();
                done.bytes_after += bytes;
            }
            Ok(Err(reason)) => {
                tracing::warn!(%dir, %reason, "An hour of the archive was not compacted.");
                done.skipped.push(format!("{dir}: {reason}"));
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                return Err(e);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    if done.hours > 0 {
        std::thread::sleep(SWAP_GRACE);
        retire_replaced(store, SWAP_GRACE)?;
    }
    Ok(done)
}

/// Compacts the files `live` of the hour `dir` into `c-<run>.parquet`, put
/// beside them: its rows and bytes, or why the hour was left as it was.
fn compact_hour(
    store: &ObjectArchive,
    config: &ArchiveConfig,
    work: &Path,
    (dir, live): (&str, &[&Object]),
    run: i64,
) -> Result<Result<(u64, u64), String>, ArchiveError> {
    if work.exists() {
        std::fs::remove_dir_all(work).map_err(io(work))?;
    }
    let sources = work.join("sources");
    std::fs::create_dir_all(&sources).map_err(io(&sources))?;
    let names: Vec<(String, u64)> = live.iter().map(|o| (name_of(&o.key).to_string(), o.size)).collect();
    let downloads: Vec<(String, std::path::PathBuf)> = live
        .iter()
        .map(|o| (o.key.clone(), sources.join(name_of(&o.key))))
        .collect();
    store.download_all(&downloads)?;
    let tmp = work.join("compacted.parquet");
    let (rows, bytes) = match write_compacted(&sources, &names, &tmp, config) {
        Ok(done) => done,
        Err(reason) => return Ok(Err(reason)),
    };
    // The commit point: from this PUT on, queries read this file instead.
    store.put_file(&tmp, &format!("{dir}/{COMPACTED}{run:020}.parquet"))?;
    std::fs::remove_dir_all(work).map_err(io(work))?;
    Ok(Ok((rows, bytes)))
}

/// Retires (see [`expire`]) the files compacted files replace, once the
/// compacted file was put `grace` ago: how many. A replaced compacted file
/// goes after the files it replaced.
fn retire_replaced(store: &ObjectArchive, grace: Duration) -> Result<u64, ArchiveError> {
    let grace = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
    let now = chrono::Utc::now().timestamp_micros();
    let (mut rolled, mut compacted) = (Vec::new(), Vec::new());
    for (dir, (_, files)) in by_hour(store.list_objects(POSTS_DIR)?) {
        let replacing = replacements(store, &files);
        let present: HashSet<&str> = files.iter().map(|o| name_of(&o.key)).collect();
        let mut doomed: HashSet<String> = files
            .iter()
            .filter(|o| now.saturating_sub(o.modified) >= grace)
            .filter_map(|o| replacing.get(name_of(&o.key)))
            .flatten()
            .filter(|n| present.contains(n.as_str()))
            .cloned()
            .collect();
        // What a doomed compacted file replaces shows again once it is
        // gone: it goes too, first.
        let mut grew = true;
        while grew {
            let more: Vec<String> = doomed
                .iter()
                .filter_map(|n| replacing.get(n))
                .flatten()
                .filter(|n| present.contains(n.as_str()) && !doomed.contains(*n))
                .cloned()
                .collect();
            grew = !more.is_empty();
            doomed.extend(more);
        }
        for name in doomed {
            match name.starts_with(COMPACTED) {
                false => rolled.push(format!("{dir}/{name}")),
                true => compacted.push(format!("{dir}/{name}")),
            }
        }
    }
    // Files a roll wrote first, then compacted files oldest first.
    compacted.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    let under = format!("{RETIRED_DIR}/{now:020}");
    store.move_all(&rolled, &under)?;
    for key in &compacted {
        store.move_all(std::slice::from_ref(key), &under)?;
    }
    Ok((rolled.len() + compacted.len()) as u64)
}

/// Retention: the hour partitions of posts that ended at or before
/// `cutoff` (µs) are retired (copied under `.retired/<now>/`, then
/// deleted), and the dead letters of days that ended by then deleted.
pub fn expire(store: &ObjectArchive, now: i64, cutoff: i64) -> Result<Expired, ArchiveError> {
    let mut expired = Expired::default();
    let mut keys = Vec::new();
    for (_, (end, files)) in by_hour(store.list_objects(POSTS_DIR)?) {
        if end > cutoff {
            continue;
        }
        keys.extend(files.into_iter().map(|o| o.key));
        expired.hours += 1;
    }
    store.move_all(&keys, &format!("{RETIRED_DIR}/{now:020}"))?;
    expired.files = keys.len() as u64;
    let cutoff_day = chrono::DateTime::from_timestamp_micros(cutoff).map(|t| t.date_naive());
    let mut days = HashSet::new();
    let mut old = Vec::new();
    for object in store.list_objects(ERRORS_DIR)? {
        let day = object
            .key
            .split('/')
            .nth(1)
            .and_then(|d| d.strip_prefix("dt="))
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        if let (Some(day), Some(cutoff_day)) = (day, cutoff_day)
            && day < cutoff_day
        {
            old.push(object.key);
            days.insert(day);
        }
    }
    store.delete_all(&old)?;
    expired.error_days = days.len() as u64;
    Ok(expired)
}

/// Deletes the copies retired more than `grace` before `now` (µs): how
/// many.
pub fn remove_retired(store: &ObjectArchive, now: i64, grace: Duration) -> Result<u64, ArchiveError> {
    let grace = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
    let due: Vec<String> = store
        .list_objects(RETIRED_DIR)?
        .into_iter()
        .filter(|o| {
            let run = o.key.split('/').nth(1).and_then(|r| r.parse::<i64>().ok());
            run.is_some_and(|run| now.saturating_sub(run) >= grace)
        })
        .map(|o| o.key)
        .collect();
    store.delete_all(&due)?;
    Ok(due.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::archive::compact::tests::{DAY, HOUR, NOW, archive, ids, write_file};
    use crate::sinks::archive::objects::testing::S3Server;

    /// The names in the hour `hour` of the bucket.
    fn names(store: &ObjectArchive, hour: i64) -> Vec<String> {
        let (dt, h) = crate::record::batch::partition_of_time(DAY + hour * HOUR);
        let dir = format!("{POSTS_DIR}/dt={dt}/hour={h:02}");
        let mut names: Vec<String> = store
            .list(&dir)
            .unwrap()
            .into_iter()
            .map(|(k, _)| name_of(&k).to_string())
            .collect();
        names.sort();
        names
    }

    /// The post ids in the object at `key`.
    fn ids_in(store: &ObjectArchive, key: &str) -> Vec<String> {
        let bytes = bytes::Bytes::from(store.read(key).unwrap());
        let batches: Vec<_> = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut ids = ids(&batches);
        ids.sort();
        ids
    }

    /// Puts every file under `local` at the same key in `store`.
    fn upload(local: &Path, store: &ObjectArchive) {
        for path in crate::sinks::archive::files_under(local).unwrap() {
            let key = path.strip_prefix(local).unwrap().to_str().unwrap().to_string();
            store.put_file(&path, &key).unwrap();
        }
    }

    #[test]
    fn a_closed_hour_in_a_bucket_becomes_one_object_replaced_ones_retire_and_a_crash_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let server = S3Server::start(dir.path(), "lake");
        let store = server.archive("s3://lake/chorus");
        // Hour 0: five files; hour 1: two; hour 4: five, closed less than
        // an hour before NOW; hour 5: five, still open.
        let local = archive();
        upload(local.path(), &store);
        let staging = dir.path().join("staging");
        let (gate, config) = (RwLock::new(()), ArchiveConfig::default());
        let pass = |now: i64| {
            compact(
                &store,
                &staging,
                (&config, &gate),
                now,
                (Duration::from_secs(3600), 4),
                &CancellationToken::new(),
            )
            .unwrap()
        };
        let before = names(&store, 0);
        let done = pass(NOW);
        assert_eq!(
            (done.hours, done.files_before, done.files_after, done.rows),
            (1, 5, 1, 15)
        );
        let compacted = format!("c-{NOW:020}.parquet");
        assert_eq!(names(&store, 0), [compacted.as_str()]);
        for hour in [1, 4, 5] {
            assert_eq!(names(&store, hour).len(), if hour == 1 { 2 } else { 5 }, "hour {hour}");
        }
        let (dt, h) = crate::record::batch::partition_of_time(DAY);
        let dir0 = format!("{POSTS_DIR}/dt={dt}/hour={h:02}");
        let expected: Vec<String> = {
            let mut all: Vec<String> = (0..5)
                .flat_map(|f| (0..3).map(move |i| format!("t1_0_{f}_{i}")))
                .collect();
            all.sort();
            all
        };
        assert_eq!(ids_in(&store, &format!("{dir0}/{compacted}")), expected);
        // The replaced files wait under .retired/ for running queries.
        let retired = store.list(RETIRED_DIR).unwrap();
        assert_eq!(retired.len(), 5, "{retired:?}");
        assert!(
            retired
                .iter()
                .all(|(k, _)| k.ends_with(".parquet") && k.contains(&dir0))
        );
        assert!(!staging.join(TMP_DIR).join("compact").exists());

        // A stop after the commit point left the replaced files in place:
        // the next pass retires them before anything else.
        let local0 = local.path().join(&dir0);
        for name in &before {
            store.put_file(&local0.join(name), &format!("{dir0}/{name}")).unwrap();
        }
        std::thread::sleep(SWAP_GRACE);
        let done = pass(NOW + 1);
        assert_eq!(done.hours, 0);
        assert_eq!(names(&store, 0), [compacted.as_str()]);

        // Late files join the compacted one in a second compaction, which
        // replaces it too; then the first is retired after its files.
        let late = tempfile::tempdir().unwrap();
        for f in 0..3u64 {
            write_file(late.path(), DAY + 10, 100 + f * 3, &[&format!("t1_late_{f}")]);
        }
        upload(late.path(), &store);
        let done = pass(NOW + 2);
        assert_eq!((done.hours, done.files_before, done.rows), (1, 4, 18));
        let second = format!("c-{:020}.parquet", NOW + 2);
        assert_eq!(names(&store, 0), [second.as_str()]);
        let mut all = expected.clone();
        all.extend((0..3).map(|f| format!("t1_late_{f}")));
        all.sort();
        assert_eq!(ids_in(&store, &format!("{dir0}/{second}")), all);

        // Retention and the removal of what was retired.
        let expired = expire(&store, NOW + 3, DAY + 2 * HOUR).unwrap();
        assert_eq!((expired.hours, expired.files), (2, 3));
        assert!(names(&store, 0).is_empty() && names(&store, 1).is_empty());
        assert_eq!(names(&store, 4).len(), 5);
        // (Compaction names its retirements by the clock, past NOW.)
        let later = chrono::Utc::now().timestamp_micros() + 1;
        assert_eq!(remove_retired(&store, NOW + 2, Duration::ZERO).unwrap(), 0);
        let removed = remove_retired(&store, later, Duration::ZERO).unwrap();
        // Five compacted, the same five again, the first compacted file and
        // three late ones, then the second and hour 1's two.
        assert_eq!(removed, 5 + 5 + 4 + 3);
        assert!(store.list(RETIRED_DIR).unwrap().is_empty());
    }

    #[test]
    fn a_post_file_key_names_its_hour() {
        let end = NaiveDate::from_ymd_opt(2019, 1, 1)
            .unwrap()
            .and_hms_opt(6, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        assert_eq!(
            hour_of("posts/dt=2019-01-01/hour=05/p0-1-2.parquet"),
            Some(("posts/dt=2019-01-01/hour=05", end))
        );
        for key in [
            "errors/dt=2019-01-01/p0-1-2.ndjson",
            "posts/dt=2019-01-01/hour=24/p0-1-2.parquet",
            "posts/dt=2019-13-01/hour=05/p0-1-2.parquet",
            "posts/dt=2019-01-01/hour=05/x/p0-1-2.parquet",
            "posts/p0-1-2.parquet",
        ] {
            assert_eq!(hour_of(key), None, "{key}");
        }
    }
}
