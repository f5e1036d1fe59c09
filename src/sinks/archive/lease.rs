//! One writer per archive in a bucket: a lease object, `<prefix>/.writer`,
//! that the process running the archive creates with a conditional PUT
//! (`If-None-Match: *`) and renews with another (`If-Match` on the ETag it
//! last wrote). A directory archive has its lock file for this; a bucket has
//! no lock, and two writers would each place files for the same log offsets
//! under their own roll points: posts counted twice, for good.
//!
//! * A second process finds the lease held and refuses to start, naming the
//!   holder and when its lease runs out.
//! * A lease not renewed for its `lease_secs` (the holder was killed, or cut
//!   off) may be taken over, by a conditional PUT on the ETag read, so of two
//!   processes taking it at once one wins. A process on the same machine
//!   and staging directory as the holder takes it at once: the staging
//!   directory's lock shows the holder is gone.
//! * The holder renews every third of `lease_secs`, and writes nothing once
//!   two thirds of it have passed since the last renewal that succeeded:
//!   another process can take over only after the whole of it, by its own
//!   clock, so the machines' clocks may differ by up to a third of it. A
//!   renewal refused because the lease changed hands stops the archive.
//! * A clean stop deletes the lease, so the next writer starts at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::ArchiveError;
use super::objects::ObjectArchive;

/// The lease object, under the archive's prefix.
pub const LEASE_KEY: &str = ".writer";
/// Largest lease object read (a holder's JSON is a few hundred bytes).
const LEASE_BYTES: u64 = 4096;

/// The lease object's holder and version, read whole if it is no larger
/// than [`LEASE_BYTES`] (`None` for its holder otherwise, or when it is
/// not a holder's JSON).
async fn read_lease(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
) -> Result<(Option<Holder>, UpdateVersion), object_store::Error> {
    let got = store.get(path).await?;
    let version = UpdateVersion {
        e_tag: got.meta.e_tag.clone(),
        version: got.meta.version.clone(),
    };
    if got.meta.size > LEASE_BYTES {
        return Ok((None, version));
    }
    Ok((serde_json::from_slice(&got.bytes().await?).ok(), version))
}

/// Who holds a lease, as its object says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    /// The holder's host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its staging directory (absolute).
    pub staging: String,
    /// When it last renewed the lease, µs since the epoch (its clock).
    pub renewed_at: i64,
    /// How long the lease lasts unrenewed, seconds.
    pub lease_secs: u64,
}

impl Holder {
    fn describe(&self) -> String {
        format!("process {} on {} (staging {})", self.pid, self.host, self.staging)
    }

    /// When the lease runs out, µs since the epoch.
    fn expires_at(&self) -> i64 {
        self.renewed_at
            .saturating_add((self.lease_secs as i64).saturating_mul(1_000_000))
    }
}

/// What the renewals share with the archive.
struct State {
    /// The lease's version as last written by this process.
    version: Mutex<UpdateVersion>,
    /// Writes are allowed until then.
    valid_until: Mutex<Instant>,
    /// Set when a renewal found the lease in other hands.
    lost: AtomicBool,
    /// Set when the archive closes: renewals stop.
    closing: AtomicBool,
}

/// A lease this process holds on an archive in a bucket; renewed on a
/// thread of its own until dropped, then deleted.
pub struct Lease {
    archive: Arc<ObjectArchive>,
    holder: Holder,
    lease: Duration,
    state: Arc<State>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

impl Lease {
    /// Takes the lease of `archive` for the process whose staging directory
    /// is `staging` (locked by the caller), lasting `lease` unrenewed; fails
    /// with [`ArchiveError::Leased`] while another process holds it.
    pub fn acquire(archive: ObjectArchive, staging: &std::path::Path, lease: Duration) -> Result<Lease, ArchiveError> {
        let archive = Arc::new(archive);
        let lease = lease.max(Duration::from_secs(1));
        let staging = std::path::absolute(staging)
            .unwrap_or_else(|_| staging.to_path_buf())
            .display()
            .to_string();
        let mut holder = Holder {
            host: host_name(),
            pid: std::process::id(),
            staging,
            renewed_at: 0,
            lease_secs: lease.as_secs(),
        };
        let path = archive.path(LEASE_KEY);
        let store = archive.store();
        let mut mode = PutMode::Create;
        // A few rounds at most: a lease taken over between our read and
        // our write is another process's, and refused in the next round.
        for _ in 0..3 {
            let started = Instant::now();
            holder.renewed_at = now_us();
            let body = serde_json::to_vec(&holder).map_err(|e| ArchiveError::Other(e.to_string()))?;
            let put = archive.block_on(store.put_opts(&path, PutPayload::from(body), PutOptions::from(mode.clone())));
            match put {
                Ok(written) => {
                    let state = Arc::new(State {
                        version: Mutex::new(UpdateVersion {
                            e_tag: written.e_tag,
                            version: written.version,
                        }),
                        valid_until: Mutex::new(started + lease * 2 / 3),
                        lost: AtomicBool::new(false),
                        closing: AtomicBool::new(false),
                    });
                    let renewer = spawn_renewer(archive.clone(), holder.clone(), lease, state.clone())?;
                    tracing::info!(archive = %archive.url(), "Took the archive's writer lease.");
                    return Ok(Lease {
                        archive,
                        holder,
                        lease,
                        state,
                        renewer: Some(renewer),
                    });
                }
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {}
                Err(e) => return Err(archive.failed(LEASE_KEY)(e)),
            }
            // Held, or changed under us: read who holds it.
            let (current, version) = match archive.block_on(read_lease(&*store, &path)) {
                Ok(read) => read,
                // Deleted meanwhile (its holder stopped): create it again.
                Err(object_store::Error::NotFound { .. }) => {
                    mode = PutMode::Create;
                    continue;
                }
                Err(e) => return Err(archive.failed(LEASE_KEY)(e)),
            };
            let current = current.ok_or_else(|| {
                ArchiveError::Other(format!(
                    "{}/{LEASE_KEY} is not a chorus writer lease: if no chorus process writes this archive, \
                     delete the object",
                    archive.url().as_str().trim_end_matches('/')
                ))
            })?;
            let ours = current.host == holder.host && current.staging == holder.staging;
            if !ours && now_us() < current.expires_at() {
                return Err(ArchiveError::Leased {
                    url: archive.url().to_string(),
                    holder: current.describe(),
                    seconds: ((current.expires_at() - now_us()) / 1_000_000).max(1) as u64,
                });
            }
            tracing::warn!(
                archive = %archive.url(),
                holder = %current.describe(),
                "Taking over the archive's writer lease: its holder stopped renewing it."
            );
            mode = PutMode::Update(version);
        }
        Err(ArchiveError::Other(format!(
            "the writer lease of {} kept changing hands; try again",
            archive.url()
        )))
    }

    /// Whether this process may still write the archive: an error once the
    /// lease was lost or could not be renewed in time.
    pub fn check(&self) -> Result<(), ArchiveError> {
        if self.state.lost.load(Ordering::Acquire) {
            return Err(ArchiveError::Other(format!(
                "the writer lease of {} was taken by another process: this one stops writing",
                self.archive.url()
            )));
        }
        let valid_until = *self.state.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() >= valid_until {
            return Err(ArchiveError::Other(format!(
                "the writer lease of {} could not be renewed for {} s (the store did not answer): another \
                 process may take it over, so this one stops writing",
                self.archive.url(),
                (self.lease * 2 / 3).as_secs()
            )));
        }
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.state.closing.store(true, Ordering::Release);
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        if self.state.lost.load(Ordering::Acquire) {
            return;
        }
        // Deleted only while it still names this process.
        let path = self.archive.path(LEASE_KEY);
        let store = self.archive.store();
        let (pid, host) = (self.holder.pid, self.holder.host.clone());
        let mine = self
            .archive
            .block_on(read_lease(&*store, &path))
            .map(|(holder, _)| holder.is_some_and(|h| h.pid == pid && h.host == host));
        if matches!(mine, Ok(true))
            && let Err(e) = self.archive.block_on(store.delete(&path))
        {
            tracing::warn!(error = %e, "Could not delete the archive's writer lease; the next writer waits for it to run out.");
        }
    }
}

fn spawn_renewer(
    archive: Arc<ObjectArchive>,
    mut holder: Holder,
    lease: Duration,
    state: Arc<State>,
) -> Result<std::thread::JoinHandle<()>, ArchiveError> {
    std::thread::Builder::new()
        .name("archive-lease".into())
        .spawn(move || {
            let path = archive.path(LEASE_KEY);
            let store = archive.store();
            let every = lease / 3;
            let mut next = Instant::now() + every;
            while !state.closing.load(Ordering::Acquire) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(50).min(every));
                    continue;
                }
                let started = Instant::now();
                holder.renewed_at = now_us();
                let Ok(body) = serde_json::to_vec(&holder) else {
                    return;
                };
                let version = state.version.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let put = archive.block_on(store.put_opts(
                    &path,
                    PutPayload::from(body),
                    PutOptions::from(PutMode::Update(version)),
                ));
                match put {
                    Ok(written) => {
                        *state.version.lock().unwrap_or_else(|e| e.into_inner()) = UpdateVersion {
                            e_tag: written.e_tag,
                            version: written.version,
                        };
                        *state.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = started + lease * 2 / 3;
                        next = started + every;
                    }
                    Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                        tracing::error!(archive = %archive.url(), "The archive's writer lease was taken by another process.");
                        state.lost.store(true, Ordering::Release);
                        return;
                    }
                    Err(e) => {
                        // Tried again soon; writes stop if it stays down.
                        tracing::warn!(archive = %archive.url(), error = %e, "Could not renew the archive's writer lease.");
                        next = Instant::now() + Duration::from_secs(1).min(every);
                    }
                }
            }
        })
        .map_err(|e| ArchiveError::Other(format!("cannot start the archive's lease thread: {e}")))
}
