//! What every [`Log`] backend must do, as checks any test can run against
//! a backend: the embedded log's unit tests run them
//! ([`crate::log_conformance!`]), and so must every other backend's.
//!
//! The checks hold for a log whose offsets have gaps (Kafka's transaction
//! markers take offsets): they never assume that a partition's offsets
//! are dense or start at 0, only that they increase, that a read from an
//! offset starts at the first record at or after it, and that the end
//! offset is past every record. Consumers must follow the same rule:
//! the next read starts at the last record's offset + 1, never at the
//! first offset plus the number of records.
//!
//! A check panics (as a test does) on the first thing that is wrong.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Entry, Log, LogError, Position, Topic, Transaction, partition_of};

/// Where one log lives, for the checks: [`Place::open`] opens it, and
/// opening it again (the previous handle dropped) finds what was written.
/// A place outlives every log opened from it (a temporary directory is
/// removed when its place is dropped).
pub trait Place {
    /// Opens the log kept here.
    fn open(&self) -> Arc<dyn Log>;
}

/// A fresh, empty place for a log with that many partitions per topic.
pub type NewPlace<'a> = &'a dyn Fn(u32) -> Box<dyn Place>;

fn records(prefix: &str, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("reddit\0{prefix}{i}").into_bytes(),
                format!("{prefix} post {i}").into_bytes(),
            )
        })
        .collect()
}

fn refs(r: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    r.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect()
}

/// Every record of a partition, read as a consumer does (from the last
/// offset + 1, `max` records at a time).
fn read_all(log: &dyn Log, topic: Topic, partition: u32, max: usize) -> Vec<Entry> {
    let mut all: Vec<Entry> = Vec::new();
    let mut next = 0;
    loop {
        let entries = log.read(topic, partition, next, max, usize::MAX).unwrap();
        let Some(last) = entries.last() else {
            return all;
        };
        assert!(
            entries.len() <= max,
            "a read gave {} records, asked for {max}",
            entries.len()
        );
        next = last.offset + 1;
        all.extend(entries);
    }
}

/// Asserts that `topic` holds the values of `records` and nothing else,
/// in whatever partitions and order.
pub fn assert_holds(log: &dyn Log, topic: Topic, records: &[(Vec<u8>, Vec<u8>)]) {
    let mut read: Vec<Vec<u8>> = (0..log.partitions())
        .flat_map(|p| read_all(log, topic, p, 1000))
        .map(|e| e.value.to_vec())
        .collect();
    let mut sent: Vec<Vec<u8>> = records.iter().map(|(_, v)| v.clone()).collect();
    read.sort();
    sent.sort();
    assert_eq!(read, sent, "{topic} holds what was appended, once each");
}

/// Appends land in the partition of their key, in order, at increasing
/// offsets, each read back as written from its own offset; a read from
/// just after a record starts at the next one; the end offset is past the
/// last record; other topics stay empty.
pub fn appends_read_back_in_their_keys_partitions(new: NewPlace<'_>) {
    let place = new(4);
    let log = place.open();
    assert_eq!(log.partitions(), 4);
    let recs = records("a", 100);
    let positions = log.append(Topic::Raw, &refs(&recs)).unwrap();
    assert_eq!(positions.len(), recs.len());
    let ends = log.end_offsets(Topic::Raw).unwrap();
    assert_eq!(ends.len(), 4);
    for (pos, (key, value)) in positions.iter().zip(&recs) {
        assert_eq!(pos.partition, partition_of(key, 4), "the partition of the key");
        assert!(
            pos.offset < ends[pos.partition as usize],
            "end offset past every record"
        );
        let got = log.read(Topic::Raw, pos.partition, pos.offset, 1, usize::MAX).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].offset, &got[0].value[..]), (pos.offset, &value[..]));
    }
    for p in 0..4 {
        let mine: Vec<&Position> = positions.iter().filter(|pos| pos.partition == p).collect();
        let all = read_all(&*log, Topic::Raw, p, 7);
        assert_eq!(
            all.iter().map(|e| e.offset).collect::<Vec<_>>(),
            mine.iter().map(|pos| pos.offset).collect::<Vec<_>>(),
            "partition {p}: the records appended, in order"
        );
        for pair in all.windows(2) {
            let after = log.read(Topic::Raw, p, pair[0].offset + 1, 1, usize::MAX).unwrap();
            assert_eq!(
                after[0].offset, pair[1].offset,
                "a read starts at the first record at or after it"
            );
        }
        assert!(
            log.read(Topic::Raw, p, ends[p as usize], 10, usize::MAX)
                .unwrap()
                .is_empty()
        );
    }
    for topic in [Topic::Enriched, Topic::Dead] {
        assert!((0..4).all(|p| log.read(topic, p, 0, 10, usize::MAX).unwrap().is_empty()));
    }
}

/// A read stops at `max_bytes` but always gives at least one record.
pub fn reads_stop_at_the_byte_bound_after_at_least_one_record(new: NewPlace<'_>) {
    let place = new(1);
    let log = place.open();
    let value = [7u8; 100];
    let mut offsets = Vec::new();
    for _ in 0..10 {
        offsets.push(log.append(Topic::Raw, &[(b"k", &value)]).unwrap()[0].offset);
    }
    let read = |max_bytes| -> Vec<u64> {
        log.read(Topic::Raw, 0, offsets[2], 100, max_bytes)
            .unwrap()
            .iter()
            .map(|e| e.offset)
            .collect()
    };
    assert_eq!(read(250), offsets[2..5]);
    assert_eq!(read(1), offsets[2..3]);
    assert_eq!(read(usize::MAX), offsets[2..]);
}

/// Records, commits and state are there after the log is opened again,
/// and appends go on past the old end.
pub fn records_commits_and_state_survive_a_reopen(new: NewPlace<'_>) {
    let place = new(2);
    let recs = records("r", 10);
    let ends;
    {
        let log = place.open();
        log.append(Topic::Enriched, &refs(&recs)).unwrap();
        log.commit("archive", Topic::Enriched, 1, 3).unwrap();
        log.write(Transaction::new().put_state(b"seen/x", b"1")).unwrap();
        ends = log.end_offsets(Topic::Enriched).unwrap();
    }
    let log = place.open();
    assert_eq!(log.end_offsets(Topic::Enriched).unwrap(), ends);
    assert_eq!(log.committed("archive", Topic::Enriched, 1).unwrap(), 3);
    assert_eq!(
        log.committed("archive", Topic::Enriched, 0).unwrap(),
        0,
        "never committed"
    );
    assert_eq!(log.committed("index", Topic::Enriched, 1).unwrap(), 0, "per consumer");
    assert_eq!(log.state(b"seen/x").unwrap().as_deref(), Some(&b"1"[..]));
    assert_holds(&*log, Topic::Enriched, &recs);
    let more = log.append(Topic::Enriched, &refs(&records("m", 1))).unwrap()[0];
    assert!(
        more.offset >= ends[more.partition as usize],
        "offsets go on past the old end"
    );
}

/// Threads appending at once get distinct positions, and every record is
/// stored once; lag counts what a consumer has not committed.
pub fn concurrent_appends_get_distinct_positions_and_lag_counts_them(new: NewPlace<'_>) {
    let place = new(3);
    let log = place.open();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut positions = Vec::new();
                for round in 0..25 {
                    let recs = records(&format!("t{t}-{round}-"), 8);
                    positions.extend(log.append(Topic::Raw, &refs(&recs)).unwrap());
                }
                positions
            })
        })
        .collect();
    let mut positions: Vec<Position> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), 800, "every append its own position");
    let mut values = Vec::new();
    let mut lasts = Vec::new();
    for p in 0..3 {
        let entries = read_all(&*log, Topic::Raw, p, 64);
        lasts.push(entries.last().map(|e| e.offset + 1));
        values.extend(entries.into_iter().map(|e| e.value.to_vec()));
    }
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 800, "every record stored once");
    assert!(log.lag("enrich", Topic::Raw).unwrap() >= 800);
    let ends = log.end_offsets(Topic::Raw).unwrap();
    for (p, end) in ends.iter().enumerate() {
        log.commit("enrich", Topic::Raw, p as u32, *end).unwrap();
        assert!(lasts[p].is_none_or(|last| last <= *end));
    }
    assert_eq!(log.lag("enrich", Topic::Raw).unwrap(), 0);
    // All partitions' committed offsets at once are each partition's.
    log.commit("enrich", Topic::Raw, 1, ends[1] / 2).unwrap();
    let one_by_one: Vec<u64> = (0..3)
        .map(|p| log.committed("enrich", Topic::Raw, p).unwrap())
        .collect();
    assert_eq!(log.committed_all("enrich", Topic::Raw).unwrap(), one_by_one);
    assert_eq!(one_by_one, vec![ends[0], ends[1] / 2, ends[2]]);
    assert_eq!(log.committed_all("nobody", Topic::Raw).unwrap(), vec![0, 0, 0]);
    assert_eq!(log.lag("enrich", Topic::Raw).unwrap(), ends[1] - ends[1] / 2);
}

/// A transaction's appends (to several topics), state and commits are
/// there together, also after a reopen.
pub fn a_transaction_lands_whole(new: NewPlace<'_>) {
    let place = new(2);
    let p = partition_of(b"k1", 2);
    {
        let log = place.open();
        let raw = log.append(Topic::Raw, &[(b"k1", b"raw")]).unwrap()[0];
        let mut tx = Transaction::new();
        tx.append(Topic::Enriched, b"k1", b"enriched")
            .append(Topic::Dead, b"k2", b"dead")
            .put_state(b"seen/k1", b"1")
            .put_state(b"seen/k3", b"3")
            .commit("enrich", Topic::Raw, raw.partition, raw.offset + 1);
        let positions = log.write(&tx).unwrap();
        assert_eq!(positions.len(), 2, "one position per append, in order");
        assert_eq!(positions[0].partition, p);
        assert_eq!(positions[1].partition, partition_of(b"k2", 2));
        log.write(Transaction::new().remove_state(b"seen/k3")).unwrap();
        assert_eq!(log.committed("enrich", Topic::Raw, p).unwrap(), raw.offset + 1);
    }
    let log = place.open();
    let enriched = read_all(&*log, Topic::Enriched, p, 10);
    assert_eq!(enriched.len(), 1);
    assert_eq!(&enriched[0].value[..], b"enriched");
    let dead: usize = (0..2).map(|q| read_all(&*log, Topic::Dead, q, 10).len()).sum();
    assert_eq!(dead, 1);
    assert_eq!(log.state(b"seen/k1").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(log.state(b"seen/k2").unwrap(), None);
    assert_eq!(log.state(b"seen/k3").unwrap(), None, "removed");
    assert_eq!(log.lag("enrich", Topic::Raw).unwrap(), 0);
}

/// `scan_state` gives the entries of a prefix in key order, in bounded
/// steps after a key.
pub fn state_scans_by_prefix_in_bounded_steps(new: NewPlace<'_>) {
    let place = new(1);
    let log = place.open();
    let mut tx = Transaction::new();
    let keys: Vec<String> = (0..25).map(|i| format!("seen/{i:03}")).collect();
    for key in &keys {
        tx.put_state(key.as_bytes(), b"v");
    }
    tx.put_state(b"other/1", b"v")
        .put_state(b"seen", b"not under the prefix");
    log.write(&tx).unwrap();
    let mut got = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let step = log.scan_state(b"seen/", after.as_deref(), 10).unwrap();
        assert!(step.len() <= 10);
        let Some((last, _)) = step.last() else {
            break;
        };
        after = Some(last.clone());
        got.extend(step.into_iter().map(|(k, _)| String::from_utf8(k).unwrap()));
    }
    assert_eq!(got, keys);
}

/// A consumer waiting for records is woken by an append, not its timeout.
pub fn an_idle_consumer_wakes_up_on_append(new: NewPlace<'_>) {
    let place = new(1);
    let log = place.open();
    let seen = log.end_offsets(Topic::Raw).unwrap();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            log.append(Topic::Raw, &[(b"k", b"v")]).unwrap();
        })
    };
    let start = Instant::now();
    log.wait_for_appends(Topic::Raw, &seen, Duration::from_secs(30));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "woken by the append, not the timeout"
    );
    writer.join().unwrap();
    assert!(log.end_offsets(Topic::Raw).unwrap()[0] > seen[0]);
}

/// A partition that does not exist and a consumer name that cannot be
/// stored are refused with what is wrong, as errors no retry mends.
pub fn bad_requests_are_refused_clearly_and_not_worth_a_retry(new: NewPlace<'_>) {
    let place = new(2);
    let log = place.open();
    let err = log.read(Topic::Raw, 5, 0, 1, usize::MAX).unwrap_err();
    assert_eq!(err.to_string(), "posts.raw has 2 partitions, not partition 5");
    assert!(!err.retry_helps());
    let err = log.commit("a/b", Topic::Raw, 0, 1).unwrap_err();
    assert!(matches!(err, LogError::BadConsumer(_)), "{err}");
    assert!(!err.retry_helps());
    assert!(
        log.append(Topic::Raw, &[(b"k", b"v")]).is_ok(),
        "a refused call harms nothing"
    );
}

/// One `#[test]` per conformance check, each on a fresh place from
/// `$new` (a `Fn(u32) -> Box<dyn Place>`: partitions per topic).
#[macro_export]
macro_rules! log_conformance {
    ($new:expr) => {
        $crate::log_conformance!(@tests $new;
            appends_read_back_in_their_keys_partitions,
            reads_stop_at_the_byte_bound_after_at_least_one_record,
            records_commits_and_state_survive_a_reopen,
            concurrent_appends_get_distinct_positions_and_lag_counts_them,
            a_transaction_lands_whole,
            state_scans_by_prefix_in_bounded_steps,
            an_idle_consumer_wakes_up_on_append,
            bad_requests_are_refused_clearly_and_not_worth_a_retry,
        );
    };
    (@tests $new:expr; $($check:ident),* $(,)?) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $check() {
                    $crate::log::conformance::$check(&$new);
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::StateEntry;

    /// A broken backend: reads lose every record at an odd offset, and a
    /// refused request claims a retry would help. The checks must catch it.
    struct Lossy(Arc<dyn Log>);

    impl Log for Lossy {
        fn partitions(&self) -> u32 {
            self.0.partitions()
        }
        fn identity(&self) -> String {
            self.0.identity()
        }
        fn write(&self, tx: &Transaction<'_>) -> Result<Vec<Position>, LogError> {
            self.0.write(tx)
        }
        fn read(
            &self,
            topic: Topic,
            partition: u32,
            offset: u64,
            max: usize,
            max_bytes: usize,
        ) -> Result<Vec<Entry>, LogError> {
            let mut entries = self.0.read(topic, partition, offset, max, max_bytes)?;
            entries.retain(|e| e.offset % 2 == 0);
            Ok(entries)
        }
        fn committed(&self, consumer: &str, topic: Topic, partition: u32) -> Result<u64, LogError> {
            self.0.committed(consumer, topic, partition)
        }
        fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
            self.0.state(key)
        }
        fn scan_state(&self, prefix: &[u8], after: Option<&[u8]>, max: usize) -> Result<Vec<StateEntry>, LogError> {
            self.0.scan_state(prefix, after, max)
        }
        fn end_offsets(&self, topic: Topic) -> Result<Vec<u64>, LogError> {
            self.0.end_offsets(topic)
        }
    }

    struct LossyPlace(tempfile::TempDir, u32);

    impl Place for LossyPlace {
        fn open(&self) -> Arc<dyn Log> {
            let inner = crate::log::fjall::FjallLog::open(self.0.path(), self.1).unwrap();
            Arc::new(Lossy(Arc::new(inner)))
        }
    }

    fn lossy(partitions: u32) -> Box<dyn Place> {
        Box::new(LossyPlace(tempfile::tempdir().unwrap(), partitions))
    }

    #[test]
    fn the_checks_catch_a_backend_that_loses_records() {
        type Check = fn(NewPlace<'_>);
        let checks: [(&str, Check); 4] = [
            ("appends", appends_read_back_in_their_keys_partitions),
            ("byte bound", reads_stop_at_the_byte_bound_after_at_least_one_record),
            ("reopen", records_commits_and_state_survive_a_reopen),
            (
                "concurrent",
                concurrent_appends_get_distinct_positions_and_lag_counts_them,
            ),
        ];
        for (name, check) in checks {
            let caught = std::panic::catch_unwind(|| check(&lossy));
            assert!(caught.is_err(), "the {name} check passed a backend that loses records");
        }
    }
}
