//! The consume loop every sink shares: read a topic from the committed
//! offsets, hand the records to the sink, make them durable when the sink
//! says so, commit the offsets only after that, and drain on shutdown.
//!
//! A sink only says what to do with records ([`Sink::write`]), when what it
//! holds must be made durable ([`Sink::due`]) and how ([`Sink::flush`]); it
//! never reads the log or picks offsets itself. Offsets are committed
//! through a [`Commit`] the loop hands to `flush`, which the sink must spend
//! (its write durable first) to return: a flush that forgets to commit does
//! not compile, and one that fails commits nothing, so the records are read
//! again at the next start. A sink must therefore write idempotently (same
//! records, same result), as the archive's file names and the index's
//! upserts do.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use crate::log::Input;
use crate::log::{Entry, Log, LogError, READ_BYTES, Transaction};
use crate::transforms::Drain;

/// Sleeps `pause` in short steps: false as soon as `stop` is cancelled
/// (a sink waiting to retry gives up when the process stops).
pub fn pause_unless_stopped(stop: &CancellationToken, pause: Duration) -> bool {
    let deadline = std::time::Instant::now() + pause;
    while std::time::Instant::now() < deadline {
        if stop.is_cancelled() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(pause));
    }
    !stop.is_cancelled()
}

/// Records read from a partition at once, at most (and at most
/// [`READ_BYTES`]): a sink handed this many at once is behind the log.
pub const READ_RECORDS: usize = 4096;

/// A sink fed by [`run`].
pub trait Sink {
    /// The sink's error; a log error is one.
    type Error: From<LogError>;

    /// What it reads.
    fn input(&self) -> Input;

    /// Called once before anything is read, with the committed offset of
    /// each partition. Reading starts there, or where the sink answers
    /// (each at most the committed offset: a sink whose own store is
    /// behind the log's offsets reads again what it lost).
    fn start(&mut self, committed: &[u64]) -> Result<Option<Vec<u64>>, Self::Error> {
        let _ = committed;
        Ok(None)
    }

    /// The next records of `partition`, in offset order, following those of
    /// the previous call (the first call starts at the committed offset).
    fn write(&mut self, partition: u32, entries: &[Entry]) -> Result<(), Self::Error>;

    /// The partitions (among `pending`, those with records written since
    /// their last commit) whose records must be made durable now.
    fn due(&self, pending: &[u32]) -> Vec<u32>;

    /// Makes what `commit` covers durable, then spends `commit`.
    fn flush(&mut self, commit: Commit<'_>) -> Result<Committed, Self::Error>;
}

/// The offsets a flush may commit once its records are durable: for each
/// partition, the offset after the last record written.
#[must_use = "a flush commits its offsets by spending its Commit"]
pub struct Commit<'a> {
    log: &'a dyn Log,
    input: Input,
    offsets: Vec<(u32, u64)>,
}

/// Proof that a [`Commit`] was spent.
#[derive(Debug)]
pub struct Committed(());

impl Commit<'_> {
    /// `(partition, next offset)` of each partition this commit covers.
    pub fn offsets(&self) -> &[(u32, u64)] {
        &self.offsets
    }

    /// Commits every partition's offset in `tx`, with what the sink put in
    /// it (its state), as one log transaction.
    pub fn with(self, mut tx: Transaction<'_>) -> Result<Committed, LogError> {
        for &(partition, next) in &self.offsets {
            tx.commit(self.input.consumer, self.input.topic, partition, next);
        }
        self.log.write(&tx)?;
        Ok(Committed(()))
    }

    /// Commits every partition's offset in one log transaction.
    pub fn now(self) -> Result<Committed, LogError> {
        let mut tx = Transaction::new();
        for &(partition, next) in &self.offsets {
            tx.commit(self.input.consumer, self.input.topic, partition, next);
        }
        self.log.write(&tx)?;
        Ok(Committed(()))
    }
}

/// Where the loop is in one partition for one sink.
#[derive(Debug, Clone, Copy)]
struct Position {
    next: u64,
    /// Records written to the sink since the last commit.
    pending: bool,
}

/// Feeds `sinks` (one thread for all of them) until `shutdown`, then drains
/// what the log still holds (see [`Drain`]) and flushes what every sink
/// holds. On an error nothing more is flushed: what was not committed is
/// read again at the next start.
pub fn run<E: From<LogError>>(
    log: &dyn Log,
    sinks: &mut [&mut dyn Sink<Error = E>],
    shutdown: CancellationToken,
) -> Result<(), E> {
    let partitions = log.partitions();
    let mut positions: Vec<Vec<Position>> = Vec::with_capacity(sinks.len());
    for sink in sinks.iter_mut() {
        let input = sink.input();
        let committed = (0..partitions)
            .map(|p| log.committed(input.consumer, input.topic, p))
            .collect::<Result<Vec<u64>, LogError>>()?;
        let from: Vec<u64> = match sink.start(&committed)? {
            Some(from) if from.len() == committed.len() => {
                from.into_iter().zip(&committed).map(|(f, c)| f.min(*c)).collect()
            }
            _ => committed.clone(),
        };
        if from != committed {
            // Committed back at once, so that retention keeps what the sink
            // is about to read again.
            let mut tx = Transaction::new();
            for (p, next) in from.iter().enumerate() {
                tx.commit(input.consumer, input.topic, p as u32, *next);
            }
            log.write(&tx)?;
        }
        positions.push(from.into_iter().map(|next| Position { next, pending: false }).collect());
    }
    let mut drain = Drain::new(shutdown);
    loop {
        let mut busy = false;
        for (sink, positions) in sinks.iter_mut().zip(positions.iter_mut()) {
            let input = sink.input();
            for partition in 0..partitions {
                let at = &mut positions[partition as usize];
                let entries = log.read(input.topic, partition, at.next, READ_RECORDS, READ_BYTES)?;
                if let Some(last) = entries.last() {
                    busy = true;
                    sink.write(partition, &entries)?;
                    at.next = last.offset + 1;
                    at.pending = true;
                }
                let pending = pending(positions);
                if !pending.is_empty() {
                    let due = sink.due(&pending);
                    flush(log, &mut **sink, positions, &due)?;
                }
            }
        }
        if drain.should_stop(busy) {
            break;
        }
        if !busy && let (Some(sink), Some(positions)) = (sinks.first(), positions.first()) {
            let seen: Vec<u64> = positions.iter().map(|p| p.next).collect();
            log.wait_for_appends(sink.input().topic, &seen, Duration::from_millis(100));
        }
    }
    // Shutting down: everything read is made durable and committed.
    for (sink, positions) in sinks.iter_mut().zip(positions.iter_mut()) {
        let all = pending(positions);
        flush(log, &mut **sink, positions, &all)?;
    }
    Ok(())
}

fn pending(positions: &[Position]) -> Vec<u32> {
    (0..positions.len() as u32)
        .filter(|p| positions[*p as usize].pending)
        .collect()
}

/// Flushes `partitions` of `sink` (those of them with pending records).
fn flush<E: From<LogError>>(
    log: &dyn Log,
    sink: &mut dyn Sink<Error = E>,
    positions: &mut [Position],
    partitions: &[u32],
) -> Result<(), E> {
    let offsets: Vec<(u32, u64)> = partitions
        .iter()
        .filter_map(|&p| positions.get(p as usize).filter(|at| at.pending).map(|at| (p, at.next)))
        .collect();
    if offsets.is_empty() {
        return Ok(());
    }
    let commit = Commit {
        log,
        input: sink.input(),
        offsets,
    };
    let covered: Vec<u32> = commit.offsets.iter().map(|(p, _)| *p).collect();
    let Committed(()) = sink.flush(commit)?;
    for p in covered {
        positions[p as usize].pending = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::log::Topic;
    use crate::log::fjall::FjallLog;

    /// A sink that keeps what it is given in memory and flushes when told;
    /// `durable` is what it flushed, `fail_flush` makes the next flush fail.
    #[derive(Default)]
    struct Memory {
        name: &'static str,
        buffered: Vec<(u32, u64)>,
        durable: Vec<(u32, u64)>,
        starts: Vec<Vec<u64>>,
        flush_every: usize,
        fail_flush: bool,
        /// Where `start` asks to read from instead of the committed offsets.
        rewind: Option<Vec<u64>>,
    }

    impl Sink for Memory {
        type Error = LogError;

        fn input(&self) -> Input {
            Input {
                consumer: if self.name.is_empty() { "memory" } else { self.name },
                topic: Topic::Raw,
            }
        }

        fn start(&mut self, committed: &[u64]) -> Result<Option<Vec<u64>>, LogError> {
            self.starts.push(committed.to_vec());
            Ok(self.rewind.clone())
        }

        fn write(&mut self, partition: u32, entries: &[Entry]) -> Result<(), LogError> {
            self.buffered.extend(entries.iter().map(|e| (partition, e.offset)));
            Ok(())
        }

        fn due(&self, pending: &[u32]) -> Vec<u32> {
            if self.flush_every > 0 && self.buffered.len() >= self.flush_every {
                pending.to_vec()
            } else {
                Vec::new()
            }
        }

        fn flush(&mut self, commit: Commit<'_>) -> Result<Committed, LogError> {
            if self.fail_flush {
                return Err(LogError::Storage("flush failed".into()));
            }
            let covered: Vec<u32> = commit.offsets().iter().map(|(p, _)| *p).collect();
            let (now, keep): (Vec<_>, Vec<_>) = self.buffered.drain(..).partition(|(p, _)| covered.contains(p));
            self.buffered = keep;
            self.durable.extend(now);
            commit.now()
        }
    }

    fn append(log: &FjallLog, range: std::ops::Range<u32>) {
        let records: Vec<(Vec<u8>, Vec<u8>)> = range.map(|i| (format!("k{i}").into_bytes(), vec![1])).collect();
        let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        log.append(Topic::Raw, &refs).unwrap();
    }

    #[test]
    fn records_are_committed_only_once_flushed_and_a_restart_reads_the_rest_again() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(FjallLog::open(dir.path(), 2).unwrap());
        append(&log, 0..100);
        // Stopped at once: the loop drains all 100, flushes and commits.
        let mut sink = Memory::default();
        let stop = CancellationToken::new();
        stop.cancel();
        run(&*log, &mut [&mut sink], stop.clone()).unwrap();
        assert_eq!(sink.starts, vec![vec![0, 0]]);
        assert_eq!(sink.durable.len(), 100);
        assert!(sink.buffered.is_empty());
        assert_eq!(log.lag("memory", Topic::Raw).unwrap(), 0);

        // A failing flush commits nothing, and the next run starts from
        // the offsets of the last good commit, reading the same records.
        let first_commit = log.end_offsets(Topic::Raw).unwrap();
        append(&log, 100..150);
        let mut failing = Memory {
            fail_flush: true,
            ..Memory::default()
        };
        assert!(run(&*log, &mut [&mut failing], stop.clone()).is_err());
        assert_eq!(log.lag("memory", Topic::Raw).unwrap(), 50);
        let mut again = Memory::default();
        run(&*log, &mut [&mut again], stop.clone()).unwrap();
        assert_eq!(failing.starts, vec![first_commit.clone()]);
        assert_eq!(again.starts, vec![first_commit]);
        assert_eq!(again.durable.len(), 50);
        assert_eq!(log.lag("memory", Topic::Raw).unwrap(), 0);
    }

    #[test]
    fn a_sink_flushes_when_it_says_so_while_running_and_two_sinks_share_a_thread() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(FjallLog::open(dir.path(), 2).unwrap());
        let stop = CancellationToken::new();
        let runner = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut eager = Memory {
                    name: "eager",
                    flush_every: 1,
                    ..Memory::default()
                };
                let mut lazy = Memory {
                    name: "lazy",
                    ..Memory::default()
                };
                run(&*log, &mut [&mut eager, &mut lazy], stop).unwrap();
                (eager, lazy)
            })
        };
        append(&log, 0..10);
        // The eager sink commits while running; the lazy one only at stop.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while log.lag("eager", Topic::Raw).unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "the eager sink never committed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(log.lag("lazy", Topic::Raw).unwrap(), 10);
        stop.cancel();
        let (eager, lazy) = runner.join().unwrap();
        assert_eq!(log.lag("lazy", Topic::Raw).unwrap(), 0);
        assert_eq!(eager.durable.len(), 10);
        assert_eq!(lazy.durable.len(), 10);
        assert!(lazy.buffered.is_empty() && eager.buffered.is_empty());
    }

    #[test]
    fn a_sink_behind_the_log_reads_again_from_its_own_offsets_which_are_committed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(FjallLog::open(dir.path(), 1).unwrap());
        append(&log, 0..20);
        log.commit("memory", Topic::Raw, 0, 20).unwrap();
        // The sink lost everything past offset 5: it reads 5..20 again, and
        // the log says so before anything is read (retention sees it).
        let mut sink = Memory {
            rewind: Some(vec![5]),
            fail_flush: true,
            ..Memory::default()
        };
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(run(&*log, &mut [&mut sink], stop.clone()).is_err());
        assert_eq!(log.committed("memory", Topic::Raw, 0).unwrap(), 5);
        assert_eq!(
            sink.buffered.iter().map(|(_, o)| *o).collect::<Vec<_>>(),
            (5..20).collect::<Vec<_>>()
        );
        // A rewind never goes past the committed offsets.
        let mut ahead = Memory {
            rewind: Some(vec![99]),
            ..Memory::default()
        };
        run(&*log, &mut [&mut ahead], stop).unwrap();
        assert_eq!(ahead.durable.len(), 15);
        assert_eq!(log.committed("memory", Topic::Raw, 0).unwrap(), 20);
    }
}
