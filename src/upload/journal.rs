//! The mount's journal of in-flight multipart uploads.
//!
//! A killed daemon leaves its multipart uploads on the server: invisible, but
//! stored and billed. The age-based sweep (`--stale-upload-age`) cannot tell a
//! crashed writer's upload from a live writer's, so it waits a day. The
//! journal lets the next mount of the same bucket abort exactly the uploads of
//! mounts that died, at once:
//!
//! - Every mount appends to its own file in
//!   `<journal dir>/<hash of source, endpoint and drives>/<pid>-<random>.log`
//!   (created as `.new`, locked, then renamed, so it is never seen unlocked),
//!   one line per event: `+ <upload id> <hex key>` when an upload is created,
//!   `- <upload id>` when it is completed or aborted. The file is `flock`ed
//!   for the life of the process; the kernel drops the lock when the process
//!   dies, however it dies.
//! - At mount, every other file in the same directory whose lock can be taken
//!   belongs to a dead mount: its uploads still open are aborted (an upload
//!   already gone counts as done) and the file is removed. Files still locked
//!   belong to live mounts and are left alone, as are uploads of other clients,
//!   which never appear in any journal.
//!
//! An abort that fails (the service is down: the commit that failed before it
//! usually failed for the same reason) is retried in the background, with
//! backoff up to [`ABORT_RETRY_MAX_WAIT`], for as long as the mount lives, so
//! the upload is gone soon after the service returns rather than at the next
//! mount (issue 14: 73 MiB per drive stayed until then).
//!
//! Lines are written with one `write(2)` each and not fsynced: a killed process
//! loses nothing (the page cache survives it); a machine crash may lose the
//! last lines, and then the age-based sweep is the backstop. The journal is
//! a decorator over [`StorageBackend`], so every backend gets it unchanged.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use crate::backend::forward::backend_wrapper;
use crate::backend::*;
use crate::object::ErrorKind;

/// First wait before a failed abort is tried again; it doubles up to [`ABORT_RETRY_MAX_WAIT`].
const ABORT_RETRY_FIRST_WAIT: Duration = Duration::from_secs(1);
/// Longest wait between two tries of a failed abort.
pub const ABORT_RETRY_MAX_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_owned(), source }
}

/// The directory of one bucket's journals under `root`; `identity` names the bucket
/// (source URL plus whatever else distinguishes it, e.g. endpoint or drives).
pub fn journal_dir(root: &Path, identity: &str) -> PathBuf {
    root.join(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(identity.as_bytes())))
}

/// Default root: `$XDG_STATE_HOME/bucketfs/journal`, else `~/.local/state/bucketfs/journal`.
pub fn default_root() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("bucketfs/journal");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/state/bucketfs/journal"),
        None => std::env::temp_dir().join("bucketfs-journal"),
    }
}

fn try_lock(f: &File) -> bool {
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Uploads a journal file leaves open: `+` lines without a later `-`.
fn open_uploads(text: &str) -> BTreeMap<String, String> {
    let mut open = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split(' ');
        match (f.next(), f.next(), f.next()) {
            (Some("+"), Some(id), Some(key)) => {
                if let Ok(k) = hex::decode(key).map(|k| String::from_utf8_lossy(&k).into_owned()) {
                    open.insert(id.to_owned(), k);
                }
            }
            (Some("-"), Some(id), _) => {
                open.remove(id);
            }
            _ => {}
        }
    }
    open
}

/// What recovery did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Journals of dead mounts found.
    pub journals: usize,
    /// Their uploads aborted (or found already gone).
    pub aborted: usize,
}

/// Aborts the open uploads of every dead mount's journal in `dir`; removes those journals.
pub async fn recover(dir: &Path, backend: &dyn StorageBackend) -> Recovered {
    let mut done = Recovered::default();
    let Ok(rd) = std::fs::read_dir(dir) else { return done };
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("log") {
            continue;
        }
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else { continue };
        if !try_lock(&file) {
            continue; // a live mount's journal
        }
        done.journals += 1;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut all_gone = true;
        for (id, key) in open_uploads(&text) {
            match backend.abort_multipart(&key, &id).await {
                Ok(())
                | Err(BackendError { kind: ErrorKind::NoSuchUpload, .. })
                | Err(BackendError { kind: ErrorKind::NotFound, .. }) => {
                    done.aborted += 1;
                    tracing::info!(key = %key, upload_id = %id, "aborted an upload left by a dead mount");
                }
                Err(err) => {
                    all_gone = false;
                    tracing::warn!(key = %key, upload_id = %id, "cannot abort an upload left by a dead mount: {err}");
                }
            }
        }
        if all_gone {
            let _ = std::fs::remove_file(&path);
        }
        drop(file);
    }
    done
}

/// This mount's journal file, locked while it lives.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    pub fn create(dir: &Path) -> Result<Journal, JournalError> {
        let name = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let (tmp, path) = (dir.join(format!("{name}.new")), dir.join(format!("{name}.log")));
        let mut attempt = 0;
        let file = loop {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            match OpenOptions::new().create_new(true).append(true).open(&tmp) {
                Ok(f) => break f,
                // another mount removed the directory when it found it empty; make it again
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 3 => attempt += 1,
                Err(e) => return Err(io(&tmp)(e)),
            }
        };
        // locked before it gets the name recovery looks at, so it is never taken for a dead one
        if !try_lock(&file) {
            let _ = std::fs::remove_file(&tmp);
            return Err(JournalError::Io { path: tmp, source: std::io::Error::last_os_error() });
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(Journal { path, file: Mutex::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, line: String) {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::warn!(path = %self.path.display(), "cannot write the upload journal: {e}");
        }
    }

    fn started(&self, key: &str, upload_id: &str) {
        self.append(format!("+ {upload_id} {}\n", hex::encode(key)));
    }

    fn ended(&self, upload_id: &str) {
        self.append(format!("- {upload_id}\n"));
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // a clean exit has finished or aborted everything; nothing to recover
        let open = std::fs::read_to_string(&self.path).map(|t| open_uploads(&t).len()).unwrap_or(1);
        if open == 0 {
            let _ = std::fs::remove_file(&self.path);
            if let Some(dir) = self.path.parent() {
                let _ = std::fs::remove_dir(dir); // only if no other mount's journal is there
            }
        }
    }
}

/// Records creation and end of every multipart upload made through it.
pub struct JournaledBackend {
    inner: Arc<dyn StorageBackend>,
    journal: Arc<Journal>,
}

impl JournaledBackend {
    pub fn wrap(inner: Arc<dyn StorageBackend>, journal: Arc<Journal>) -> Arc<dyn StorageBackend> {
        Arc::new(JournaledBackend { inner, journal })
    }

    /// Tries a failed abort again until it succeeds (or the upload is gone), for as
    /// long as the runtime lives; the journal keeps the upload until then, so a
    /// mount that ends first leaves it to the next mount, as before.
    fn retry_abort_in_background(&self, key: String, upload_id: String) {
        let (inner, journal) = (self.inner.clone(), self.journal.clone());
        tokio::spawn(async move {
            let mut wait = ABORT_RETRY_FIRST_WAIT;
            loop {
                tokio::time::sleep(wait).await;
                match inner.abort_multipart(&key, &upload_id).await {
                    Ok(()) | Err(BackendError { kind: ErrorKind::NoSuchUpload, .. }) => {
                        tracing::info!(target: "bucketfs::upload", key = %key, upload_id = %upload_id,
                            "aborted an upload whose first abort had failed");
                        journal.ended(&upload_id);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(target: "bucketfs::upload", key = %key, error = %e, "abort failed again");
                        wait = (wait * 2).min(ABORT_RETRY_MAX_WAIT);
                    }
                }
            }
        });
    }
}

backend_wrapper! {
    impl StorageBackend for JournaledBackend {}
    impl MultipartStore for JournaledBackend {
        async fn create_multipart(&self, key: &str, opts: &PutOptions) -> BackendResult<String> {
            let id = self.inner.create_multipart(key, opts).await?;
            self.journal.started(key, &id);
            Ok(id)
        }
        async fn complete_multipart(
            &self,
            key: &str,
            upload_id: &str,
            parts: &[CompletedPart],
        ) -> BackendResult<ObjectMeta> {
            let res = self.inner.complete_multipart(key, upload_id, parts).await;
            if matches!(&res, Ok(_) | Err(BackendError { kind: ErrorKind::NoSuchUpload, .. })) {
                self.journal.ended(upload_id);
            }
            res
        }
        async fn abort_multipart(&self, key: &str, upload_id: &str) -> BackendResult<()> {
            let res = self.inner.abort_multipart(key, upload_id).await;
            if matches!(&res, Ok(_) | Err(BackendError { kind: ErrorKind::NoSuchUpload, .. })) {
                self.journal.ended(upload_id);
            } else if tokio::runtime::Handle::try_current().is_ok() {
                self.retry_abort_in_background(key.to_owned(), upload_id.to_owned());
            }
            res
        }
    }
    forward to inner: [
        capabilities, retries, check_bucket, head, list, get_range, get_ranges, probe_multi_range, put, delete, delete_many,
        copy, rename, upload_part, list_parts, read_part, list_multipart, abort_multipart_under,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    #[test]
    fn open_uploads_pairs_starts_and_ends() {
        let t = format!("+ u1 {}\n+ u2 {}\n- u1\ngarbage\n", hex::encode("a b"), hex::encode("c"));
        let open = open_uploads(&t);
        assert_eq!(open.into_iter().collect::<Vec<_>>(), vec![("u2".to_owned(), "c".to_owned())]);
    }

    #[tokio::test]
    async fn recovery_aborts_only_dead_mounts_uploads() {
        let root = tempfile::tempdir().unwrap();
        let dir = journal_dir(root.path(), "mem://x");
        let mem: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::default());
        // a live mount with one open and one finished upload
        let live = Arc::new(Journal::create(&dir).unwrap());
        let live_be = JournaledBackend::wrap(mem.clone(), live.clone());
        let live_id = live_be.create_multipart("live", &PutOptions::default()).await.unwrap();
        let done_id = live_be.create_multipart("done", &PutOptions::default()).await.unwrap();
        live_be.abort_multipart("done", &done_id).await.unwrap();
        // a dead mount: a journal file nobody holds a lock on
        let dead_id = mem.create_multipart("dead", &PutOptions::default()).await.unwrap();
        let dead_path = dir.join("1-dead.log");
        std::fs::write(dir.join("2-starting.new"), "+ x 78\n").unwrap(); // not yet a journal
        std::fs::write(&dead_path, format!("+ {dead_id} {}\n", hex::encode("dead"))).unwrap();
        // another client's upload, in no journal
        let other_id = mem.create_multipart("other", &PutOptions::default()).await.unwrap();

        let r = recover(&dir, mem.as_ref()).await;
        assert_eq!(r, Recovered { journals: 1, aborted: 1 });
        assert!(!dead_path.exists());
        let mut left: Vec<String> =
            mem.list_multipart("").await.unwrap().into_iter().map(|u| u.upload_id).collect();
        left.sort();
        let mut want = vec![live_id, other_id];
        want.sort();
        assert_eq!(left, want);
        assert!(live.path().exists());
    }

    #[test]
    fn multi_range_mode_passes_through_the_wrappers() {
        // Here rather than in backend/metered.rs: the stack includes the journal, a layer above the backends.
        use crate::backend::metered::MeteredBackend;
        use crate::backend::prefixed::PrefixedBackend;
        use crate::backend::test_backend::InstrumentedBackend;
        use crate::metrics::Metrics;
        let m = Arc::new(Metrics::default());
        let plain = MeteredBackend::wrap(Arc::new(MemoryBackend::new()), m.clone());
        assert_eq!(plain.capabilities().multi_range, MultiRangeMode::Native, "derived from the capabilities");
        let single = Capabilities {
            multi_range: MultiRangeMode::ParallelSingles,
            ..MemoryBackend::new().capabilities()
        };
        let single = MeteredBackend::wrap(Arc::new(MemoryBackend::with_capabilities(single)), m.clone());
        // without multi-range GETs, a batch is still fetched as parallel single ranges
        assert_eq!(single.capabilities().multi_range, MultiRangeMode::ParallelSingles);
        let fan_out = Arc::new(InstrumentedBackend::default());
        *fan_out.mode.lock().unwrap() = Some(MultiRangeMode::ParallelSingles);
        fan_out.retries.store(7, std::sync::atomic::Ordering::Relaxed);
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(crate::upload::journal::Journal::create(dir.path()).unwrap());
        let journaled = crate::upload::journal::JournaledBackend::wrap(fan_out, journal);
        let wrapped = MeteredBackend::wrap(PrefixedBackend::wrap(journaled, "p/"), m);
        assert_eq!(
            wrapped.capabilities().multi_range,
            MultiRangeMode::ParallelSingles,
            "not hidden by wrappers"
        );
        assert_eq!(wrapped.retries(), 7, "retries not hidden by wrappers");
    }
}
