//! The invalidation outbox: every invalidation a replace, a delete or `POST /admin/invalidations`
//! asks for becomes one job per configured CDN, written to the journal (fsynced) before the
//! admin call is answered, and sent by one worker per CDN until the CDN accepts it.
//!
//! - **Coalescing.** A worker waits `batch_window_ms` after the first job arrives, then sends
//!   every ready job of its CDN in as few requests as the CDN's limits allow, each path once
//!   (CloudFront: one invalidation of at most `max_paths_per_request` paths; Cloudflare: one
//!   kind of operation per call, at most `max_operations_per_request`).
//! - **Retries.** A transient failure (unreachable, throttled, 5xx, CloudFront's
//!   `TooManyInvalidationsInProgress`, Cloudflare's 429 with its `Retry-After`) puts the jobs
//!   back with a doubling delay up to `max_backoff_secs`; a refusal that cannot heal by itself
//!   (authentication, a malformed request) marks them `failed` with the CDN's error, and they
//!   are tried again only after a restart (when the configuration may have been fixed).
//! - **Exactly once across a crash.** A batch is journaled with its reference before it is sent,
//!   and the reference is CloudFront's `CallerReference`: a replay sends the same batch with the
//!   same reference, which CloudFront answers with the invalidation it already made. Cloudflare
//!   purges are idempotent.
//!
//! States: `queued` → `sent` (request on the wire) → `in-progress` (CloudFront working) →
//! `completed`; or `failed`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

use super::cloudflare::{self, Cloudflare, Purge};
use super::cloudfront::CloudFront;
use super::journal::{self, Journal, ReadReport, Record};
use crate::config::{CdnKind, InvalidationSettings, PurgeBy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Queued,
    Sent,
    InProgress,
    Completed,
    Failed,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Sent => "sent",
            JobState::InProgress => "in-progress",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }
}

/// One CDN's share of an invalidation, as `GET /admin/invalidations` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: String,
    pub cdn: CdnKind,
    pub paths: Vec<String>,
    pub state: JobState,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The CDN's id for the request that carried it (CloudFront's invalidation id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cdn_ref: Option<String>,
    /// Unix seconds.
    pub queued_at: u64,
    pub updated_at: u64,
    #[serde(skip)]
    next_attempt: Option<Instant>,
    #[serde(skip)]
    batch: Option<String>,
    #[serde(skip)]
    queued_instant: Instant,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A batch written to the journal but never answered: its reference, CDN and jobs.
pub type PendingBatch = (String, CdnKind, Vec<String>);

/// The jobs a journal describes, after a restart: unfinished ones (a job that had failed is
/// queued again), and the batches that were written but never answered (to be re-sent with
/// their own reference).
pub fn replay(records: &[Record]) -> (BTreeMap<String, Job>, Vec<PendingBatch>) {
    let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
    let now = Instant::now();
    for r in records {
        match r {
            Record::Queued {
                job,
                cdn,
                paths,
                at,
            } => {
                jobs.insert(
                    job.clone(),
                    Job {
                        id: job.clone(),
                        cdn: *cdn,
                        paths: paths.clone(),
                        state: JobState::Queued,
                        attempts: 0,
                        last_error: None,
                        cdn_ref: None,
                        queued_at: *at,
                        updated_at: *at,
                        next_attempt: None,
                        batch: None,
                        queued_instant: now,
                    },
                );
            }
            Record::Batch {
                batch, jobs: ids, ..
            } => {
                for id in ids {
                    if let Some(j) = jobs.get_mut(id) {
                        j.batch = Some(batch.clone());
                        j.state = JobState::Sent;
                        j.attempts += 1;
                    }
                }
            }
            Record::Sent {
                batch,
                cdn_ref,
                completed,
            } => {
                for j in jobs.values_mut() {
                    if j.batch.as_deref() == Some(batch) {
                        j.batch = None;
                        j.cdn_ref = Some(cdn_ref.clone());
                        j.state = if *completed {
                            JobState::Completed
                        } else {
                            JobState::InProgress
                        };
                    }
                }
            }
            Record::Completed { jobs: ids } => {
                for id in ids {
                    if let Some(j) = jobs.get_mut(id) {
                        j.state = JobState::Completed;
                    }
                }
            }
            Record::Failed {
                jobs: ids,
                error,
                attempts,
            } => {
                for id in ids {
                    if let Some(j) = jobs.get_mut(id) {
                        j.state = JobState::Failed;
                        j.batch = None;
                        j.last_error = Some(error.clone());
                        j.attempts = *attempts;
                    }
                }
            }
        }
    }
    jobs.retain(|_, j| j.state != JobState::Completed);
    let mut pending: BTreeMap<String, (CdnKind, Vec<String>)> = BTreeMap::new();
    for j in jobs.values_mut() {
        if j.state == JobState::Failed {
            j.state = JobState::Queued;
        }
        if let (JobState::Sent, Some(b)) = (j.state, &j.batch) {
            pending
                .entry(b.clone())
                .or_insert((j.cdn, Vec::new()))
                .1
                .push(j.id.clone());
        }
    }
    let pending = pending
        .into_iter()
        .map(|(b, (cdn, ids))| (b, cdn, ids))
        .collect();
    (jobs, pending)
}

/// The records that describe `jobs` (unfinished ones) on their own: what a rewritten journal
/// holds.
fn snapshot(jobs: &BTreeMap<String, Job>) -> Vec<Record> {
    let mut out = Vec::new();
    for j in jobs.values().filter(|j| j.state != JobState::Completed) {
        out.push(Record::Queued {
            job: j.id.clone(),
            cdn: j.cdn,
            paths: j.paths.clone(),
            at: j.queued_at,
        });
        match (j.state, &j.batch, &j.cdn_ref) {
            (JobState::Sent, Some(b), _) => out.push(Record::Batch {
                batch: b.clone(),
                cdn: j.cdn,
                jobs: vec![j.id.clone()],
            }),
            (JobState::InProgress, _, Some(r)) => {
                let batch = format!("{}r", j.id);
                out.push(Record::Batch {
                    batch: batch.clone(),
                    cdn: j.cdn,
                    jobs: vec![j.id.clone()],
                });
                out.push(Record::Sent {
                    batch,
                    cdn_ref: r.clone(),
                    completed: false,
                });
            }
            (JobState::Failed, _, _) => out.push(Record::Failed {
                jobs: vec![j.id.clone()],
                error: j.last_error.clone().unwrap_or_default(),
                attempts: j.attempts,
            }),
            _ => {}
        }
    }
    out
}

/// Splits paths into groups of at most `max` distinct paths, keeping each job whole: the
/// jobs of each group and the group's paths (each once).
pub fn batches(jobs: &[(String, Vec<String>)], max: usize) -> Vec<(Vec<String>, Vec<String>)> {
    let mut out: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for (id, paths) in jobs {
        let fits = out.last().is_some_and(|(_, have)| {
            let new = paths.iter().filter(|p| !have.contains(p)).count();
            have.len() + new <= max
        });
        if !fits {
            out.push((Vec::new(), Vec::new()));
        }
        let (ids, have) = out.last_mut().expect("pushed above");
        ids.push(id.clone());
        for p in paths {
            if !have.contains(p) {
                have.push(p.clone());
            }
        }
    }
    out
}

/// CloudFront's limits per distribution on invalidations in progress: 3,000 individual paths,
/// or 15 wildcard paths (CloudFront Developer Guide, "Concurrent invalidation request maximum").
pub const CLOUDFRONT_FILES_IN_PROGRESS: usize = 3000;
pub const CLOUDFRONT_WILDCARDS_IN_PROGRESS: usize = 15;

/// How many more individual and wildcard paths CloudFront takes while `in_progress` (each
/// invalidation's id and paths; a path counts once per invalidation) are still running.
pub fn cloudfront_room(in_progress: &[(String, Vec<String>)]) -> (usize, usize) {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (id, paths) in in_progress {
        for p in paths {
            if !seen.contains(&(id.as_str(), p.as_str())) {
                seen.push((id, p));
            }
        }
    }
    let wild = seen.iter().filter(|(_, p)| p.ends_with('*')).count();
    let files = seen.len() - wild;
    (
        CLOUDFRONT_FILES_IN_PROGRESS.saturating_sub(files),
        CLOUDFRONT_WILDCARDS_IN_PROGRESS.saturating_sub(wild),
    )
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CdnLabels {
    pub cdn: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SendLabels {
    pub cdn: &'static str,
    pub outcome: &'static str,
}

/// `/metrics` series of the outbox.
#[derive(Default)]
pub struct OutboxMetrics {
    /// CDN calls by outcome: accepted, retry (transient failure), failed (refused for good).
    pub sends: Family<SendLabels, Counter>,
    /// Jobs not yet accepted (queued or sent).
    pub depth: Family<CdnLabels, Gauge>,
    /// Age of the oldest job not yet accepted, in seconds.
    pub oldest: Family<CdnLabels, Gauge<f64, AtomicU64>>,
}

/// A failed send, as the worker needs it.
struct SendError {
    message: String,
    transient: bool,
    retry_after: Option<Duration>,
}

/// What a worker sends through (one per worker: the size difference costs nothing).
#[allow(clippy::large_enum_variant)]
enum Sender {
    /// Through [`Outbox::cloudfront`], the one CloudFront client of the process.
    CloudFront,
    Cloudflare {
        client: Cloudflare,
        /// Scheme and host of public URLs.
        base_url: String,
        mount: String,
        purge_by: Vec<PurgeBy>,
        max_ops: usize,
    },
}

/// CloudFront error codes a retry cannot fix.
const CLOUDFRONT_PERMANENT: &[&str] = &[
    "AccessDenied",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "NoSuchDistribution",
    "InvalidArgument",
    "MissingBody",
    "InconsistentQuantities",
    "BatchTooLarge",
    "ConstructionFailure",
];

impl Sender {
    /// The largest number of distinct paths one request may carry.
    fn max_paths(&self, settings: &InvalidationSettings) -> usize {
        match self {
            Sender::CloudFront => settings.max_paths_per_request,
            // Each path costs one operation per purge kind; calls are split further anyway.
            Sender::Cloudflare { max_ops, .. } => (*max_ops).max(1),
        }
    }

    /// Sends one batch; `Ok((cdn_ref, completed))`.
    async fn send(
        &self,
        outbox: &Outbox,
        reference: &str,
        paths: &[String],
    ) -> Result<(String, bool), SendError> {
        match self {
            Sender::CloudFront => match outbox
                .cloudfront_client()
                .await
                .create(paths, reference)
                .await
            {
                Ok(info) => Ok((info.id, info.status.eq_ignore_ascii_case("completed"))),
                Err(e) => Err(SendError {
                    transient: !CLOUDFRONT_PERMANENT.contains(&e.code.as_str()),
                    retry_after: (e.code == "TooManyInvalidationsInProgress")
                        .then_some(Duration::from_secs(30)),
                    message: format!("CloudFront {}: {}", e.code, e.message),
                }),
            },
            Sender::Cloudflare {
                client,
                base_url,
                mount,
                purge_by,
                max_ops,
            } => {
                let mut files = Vec::new();
                let mut tags = Vec::new();
                let mut prefixes = Vec::new();
                let host = base_url
                    .split_once("://")
                    .map_or(base_url.as_str(), |(_, h)| h);
                for p in paths {
                    if let Some(dir) = p.strip_suffix('*') {
                        prefixes.push(format!("{host}{dir}"));
                        continue;
                    }
                    if purge_by.contains(&PurgeBy::Url) {
                        files.push(format!("{base_url}{p}"));
                    }
                    if purge_by.contains(&PurgeBy::Tag) {
                        let asset = p
                            .strip_prefix(mount.as_str())
                            .unwrap_or(p)
                            .trim_start_matches('/');
                        tags.push(crate::http::cache_policy::file_tag(asset));
                    }
                }
                let mut ids = Vec::new();
                let purges = [
                    Purge::Files(files),
                    Purge::Tags(tags),
                    Purge::Prefixes(prefixes),
                ];
                for call in cloudflare::calls(
                    purges.into_iter().filter(|p| !p.is_empty()).collect(),
                    *max_ops,
                ) {
                    match client.purge(&call).await {
                        Ok(id) => ids.push(id),
                        Err(e) => {
                            return Err(SendError {
                                transient: e.transient(),
                                retry_after: e.retry_after,
                                message: e.to_string(),
                            })
                        }
                    }
                }
                Ok((ids.join(","), true))
            }
        }
    }
}

pub struct Outbox {
    jobs: Mutex<BTreeMap<String, Job>>,
    /// Batches written but never answered before a restart: re-sent first, same reference.
    pending: Mutex<Vec<PendingBatch>>,
    journal: Mutex<Journal>,
    /// The folder of every process's journal.
    dir: std::path::PathBuf,
    wake: [tokio::sync::Notify; 2],
    cloudfront: tokio::sync::OnceCell<CloudFront>,
    settings: InvalidationSettings,
    metrics: Arc<OutboxMetrics>,
    seq: AtomicU64,
}

fn slot(cdn: CdnKind) -> usize {
    match cdn {
        CdnKind::Cloudfront => 0,
        CdnKind::Cloudflare => 1,
    }
}

/// Completed jobs kept in memory for `GET /admin/invalidations`.
const KEEP_COMPLETED: usize = 1000;
/// How often the journals of stopped processes are looked for.
const ADOPT_EVERY: Duration = Duration::from_secs(30);
/// How often CloudFront invalidations in progress are asked about.
const POLL_EVERY: Duration = Duration::from_secs(10);

impl Outbox {
    /// Opens this process's journal in `dir` and takes over what it holds, and the journals of
    /// processes that are gone. The report says what a crash left damaged (logged by the
    /// caller); an IO error means the location is unusable.
    pub fn open(
        dir: &std::path::Path,
        settings: &InvalidationSettings,
        metrics: Arc<OutboxMetrics>,
    ) -> std::io::Result<(Arc<Outbox>, ReadReport)> {
        let (mut journal, records, report) = Journal::open_in(dir, &journal::process_name())?;
        let (jobs, pending) = replay(&records);
        // Start from a journal that holds only what is unfinished.
        journal.rewrite(&snapshot(&jobs))?;
        for cdn in &settings.cdn {
            for outcome in ["accepted", "retry", "failed"] {
                drop(metrics.sends.get_or_create(&SendLabels {
                    cdn: cdn.as_str(),
                    outcome,
                }));
            }
        }
        let outbox = Arc::new(Outbox {
            jobs: Mutex::new(jobs),
            pending: Mutex::new(pending),
            journal: Mutex::new(journal),
            dir: dir.to_owned(),
            wake: [tokio::sync::Notify::new(), tokio::sync::Notify::new()],
            cloudfront: tokio::sync::OnceCell::new(),
            settings: settings.clone(),
            metrics,
            seq: AtomicU64::new(0),
        });
        outbox.adopt_orphans()?;
        Ok((outbox, report))
    }

    /// Takes over the journals of processes that are gone (their lock is free): their
    /// unfinished jobs are written to this process's journal (fsynced), then their files are
    /// removed. Returns how many jobs were taken over.
    pub fn adopt_orphans(&self) -> std::io::Result<usize> {
        let own = self.journal_path();
        let mut taken = 0;
        for orphan in journal::orphans(&self.dir, &own)? {
            let (jobs, pending) = replay(&orphan.records);
            if orphan.report.torn_bytes > 0 || !orphan.report.damaged_lines.is_empty() {
                tracing::warn!(journal = %orphan.path.display(), torn_bytes = orphan.report.torn_bytes, damaged_lines = ?orphan.report.damaged_lines, "invalidation journal of a stopped process: dropped an unfinished last record or damaged records; the rest is taken over");
            }
            self.journal
                .lock()
                .expect("journal lock")
                .append(&snapshot(&jobs))?;
            tracing::info!(journal = %orphan.path.display(), jobs = jobs.len(), "invalidation journal of a stopped process taken over");
            taken += jobs.len();
            {
                let mut mine = self.jobs.lock().expect("jobs lock");
                for (id, j) in jobs {
                    mine.insert(id, j);
                }
            }
            self.pending.lock().expect("pending lock").extend(pending);
            if let Err(e) = orphan.remove() {
                tracing::warn!(error = %e, "cannot remove a taken-over invalidation journal");
            }
        }
        if taken > 0 {
            for w in &self.wake {
                w.notify_one();
            }
        }
        Ok(taken)
    }

    /// The CloudFront client (built on first use; no AWS call at startup), when CloudFront is
    /// one of the CDNs: the workers send through it and the admin API looks invalidations up.
    pub async fn cloudfront(&self) -> Option<&CloudFront> {
        if !self.settings.cdn.contains(&CdnKind::Cloudfront) {
            return None;
        }
        Some(self.cloudfront_client().await)
    }

    async fn cloudfront_client(&self) -> &CloudFront {
        self.cloudfront
            .get_or_init(|| CloudFront::connect(&self.settings))
            .await
    }

    pub fn journal_path(&self) -> std::path::PathBuf {
        self.journal.lock().expect("journal lock").path().to_owned()
    }

    /// Jobs the journal replayed (for the startup log).
    pub fn unfinished(&self) -> usize {
        self.jobs.lock().expect("jobs lock").len()
    }

    fn new_id(&self) -> String {
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let salt = &crate::http::multipart::random_boundary()[..6];
        format!("i{millis:011x}{:04x}{salt}", seq & 0xffff)
    }

    /// Writes records to the journal (fsynced) off the async threads.
    async fn write(self: &Arc<Self>, records: Vec<Record>) -> std::io::Result<()> {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            me.journal.lock().expect("journal lock").append(&records)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    }

    /// Queues `paths` (CDN paths, validated) for every configured CDN and returns the jobs once
    /// they are in the journal. On a journal error the jobs are still queued, in memory only,
    /// and the error says so.
    pub async fn enqueue(
        self: &Arc<Self>,
        paths: &[String],
    ) -> Result<Vec<Job>, (Vec<Job>, String)> {
        let now = unix_now();
        let mut jobs = Vec::new();
        let mut records = Vec::new();
        for cdn in &self.settings.cdn {
            let id = self.new_id();
            records.push(Record::Queued {
                job: id.clone(),
                cdn: *cdn,
                paths: paths.to_vec(),
                at: now,
            });
            jobs.push(Job {
                id,
                cdn: *cdn,
                paths: paths.to_vec(),
                state: JobState::Queued,
                attempts: 0,
                last_error: None,
                cdn_ref: None,
                queued_at: now,
                updated_at: now,
                next_attempt: None,
                batch: None,
                queued_instant: Instant::now(),
            });
        }
        let written = self.write(records).await;
        {
            let mut all = self.jobs.lock().expect("jobs lock");
            for j in &jobs {
                all.insert(j.id.clone(), j.clone());
                audit(j, None);
            }
        }
        for j in &jobs {
            self.wake[slot(j.cdn)].notify_one();
        }
        match written {
            Ok(()) => Ok(jobs),
            Err(e) => {
                tracing::error!(error = %e, "invalidation journal: cannot write; the invalidation is queued in memory only");
                Err((
                    jobs,
                    format!(
                        "the invalidation journal cannot be written ({e}); queued in memory only"
                    ),
                ))
            }
        }
    }

    /// Jobs, newest first.
    pub fn list(&self, limit: usize) -> Vec<Job> {
        let jobs = self.jobs.lock().expect("jobs lock");
        jobs.values().rev().take(limit).cloned().collect()
    }

    pub fn job(&self, id: &str) -> Option<Job> {
        self.jobs.lock().expect("jobs lock").get(id).cloned()
    }

    /// Updates the depth and oldest-age gauges (at scrape time).
    pub fn refresh_gauges(&self) {
        let jobs = self.jobs.lock().expect("jobs lock");
        for cdn in &self.settings.cdn {
            let open: Vec<&Job> = jobs
                .values()
                .filter(|j| j.cdn == *cdn && matches!(j.state, JobState::Queued | JobState::Sent))
                .collect();
            let labels = CdnLabels { cdn: cdn.as_str() };
            self.metrics
                .depth
                .get_or_create(&labels)
                .set(open.len() as i64);
            let oldest = open
                .iter()
                .map(|j| j.queued_instant.elapsed().as_secs_f64())
                .fold(0.0, f64::max);
            self.metrics.oldest.get_or_create(&labels).set(oldest);
        }
    }

    /// Starts one worker per configured CDN (inside the runtime).
    pub fn spawn(self: &Arc<Self>, public_base_url: Option<String>, mount: String) {
        // A replica that dies while others run: its journal is taken over within a minute.
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ADOPT_EVERY).await;
                let o = Arc::clone(&me);
                match tokio::task::spawn_blocking(move || o.adopt_orphans()).await {
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot look for the invalidation journals of stopped processes")
                    }
                    Err(e) => tracing::warn!(error = %e, "invalidation journal takeover failed"),
                    Ok(Ok(_)) => {}
                }
            }
        });
        for cdn in self.settings.cdn.clone() {
            let me = Arc::clone(self);
            let base = public_base_url.clone();
            let mount = mount.clone();
            tokio::spawn(async move {
                let sender = match cdn {
                    CdnKind::Cloudfront => Sender::CloudFront,
                    CdnKind::Cloudflare => {
                        let s = &me.settings.cloudflare;
                        let client = match Cloudflare::new(s) {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::error!(error = %e, "invalidation: cannot build the Cloudflare client (TLS roots); Cloudflare jobs stay queued");
                                return;
                            }
                        };
                        let base_url = if s.base_url.is_empty() {
                            base.unwrap_or_default()
                        } else {
                            s.base_url.trim_end_matches('/').to_owned()
                        };
                        Sender::Cloudflare {
                            client,
                            base_url,
                            mount,
                            purge_by: s.purge_by.clone(),
                            max_ops: s.max_operations_per_request,
                        }
                    }
                };
                me.run(cdn, sender).await;
            });
        }
    }

    /// When this CDN's worker should look again: the earliest retry, or a poll while
    /// CloudFront works.
    fn next_wake(&self, cdn: CdnKind) -> Option<Duration> {
        let jobs = self.jobs.lock().expect("jobs lock");
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        for j in jobs.values().filter(|j| j.cdn == cdn) {
            let due = match j.state {
                JobState::Queued => j
                    .next_attempt
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(now)),
                JobState::InProgress => POLL_EVERY,
                _ => continue,
            };
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        if !self.pending.lock().expect("pending lock").is_empty() {
            next = Some(Duration::ZERO);
        }
        next
    }

    async fn run(self: Arc<Self>, cdn: CdnKind, sender: Sender) {
        let window = Duration::from_millis(self.settings.batch_window_ms);
        let mut last_poll = Instant::now();
        loop {
            match self.next_wake(cdn) {
                Some(d) if d.is_zero() => {}
                Some(d) => {
                    let _ = tokio::time::timeout(d, self.wake[slot(cdn)].notified()).await;
                }
                None => self.wake[slot(cdn)].notified().await,
            }
            // Let a burst gather into one request.
            tokio::time::sleep(window).await;
            // Batches a previous run wrote but never heard back about: same reference.
            let pending: Vec<_> = {
                let mut p = self.pending.lock().expect("pending lock");
                let (mine, rest): (Vec<_>, Vec<_>) = p.drain(..).partition(|(_, c, _)| *c == cdn);
                *p = rest;
                mine
            };
            for (batch, _, ids) in pending {
                self.send_batch(&sender, cdn, batch, ids, false).await;
            }
            let ready: Vec<(String, Vec<String>)> = {
                let jobs = self.jobs.lock().expect("jobs lock");
                let now = Instant::now();
                jobs.values()
                    .filter(|j| {
                        j.cdn == cdn
                            && j.state == JobState::Queued
                            && j.next_attempt.is_none_or(|t| t <= now)
                    })
                    .map(|j| (j.id.clone(), j.paths.clone()))
                    .collect()
            };
            let mut room = match sender {
                Sender::CloudFront => cloudfront_room(&self.in_progress(cdn)),
                Sender::Cloudflare { .. } => (usize::MAX, usize::MAX),
            };
            for (ids, paths) in batches(&ready, sender.max_paths(&self.settings)) {
                let wild = paths.iter().filter(|p| p.ends_with('*')).count();
                let files = paths.len() - wild;
                let idle = room
                    == (
                        CLOUDFRONT_FILES_IN_PROGRESS,
                        CLOUDFRONT_WILDCARDS_IN_PROGRESS,
                    );
                // Over CloudFront's in-progress limits: wait for running ones to finish (a batch
                // too big even for an idle distribution goes anyway; CloudFront's answer decides).
                if (files > room.0 || wild > room.1) && !idle {
                    self.defer(&ids, POLL_EVERY);
                    continue;
                }
                room = (room.0.saturating_sub(files), room.1.saturating_sub(wild));
                let batch = self.new_id();
                self.send_batch(&sender, cdn, batch, ids, true).await;
            }
            if last_poll.elapsed() >= POLL_EVERY {
                last_poll = Instant::now();
                self.poll(&sender, cdn).await;
            }
            self.forget_completed();
        }
    }

    /// The paths of this CDN's invalidations in progress, by the CDN's id.
    fn in_progress(&self, cdn: CdnKind) -> Vec<(String, Vec<String>)> {
        let jobs = self.jobs.lock().expect("jobs lock");
        jobs.values()
            .filter(|j| j.cdn == cdn && j.state == JobState::InProgress)
            .map(|j| (j.cdn_ref.clone().unwrap_or_default(), j.paths.clone()))
            .collect()
    }

    /// Holds queued jobs back for `wait` without counting an attempt.
    fn defer(&self, ids: &[String], wait: Duration) {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        for id in ids {
            if let Some(j) = jobs.get_mut(id) {
                j.next_attempt = Some(Instant::now() + wait);
            }
        }
        tracing::info!(jobs = ids.len(), "invalidation: CloudFront's limit of invalidations in progress reached; waiting for running ones to finish");
    }

    /// Journals (when new) and sends one batch, then records the outcome.
    async fn send_batch(
        self: &Arc<Self>,
        sender: &Sender,
        cdn: CdnKind,
        batch: String,
        ids: Vec<String>,
        new: bool,
    ) {
        let paths: Vec<String> = {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            let mut paths: Vec<String> = Vec::new();
            for id in &ids {
                if let Some(j) = jobs.get_mut(id) {
                    for p in &j.paths {
                        if !paths.contains(p) {
                            paths.push(p.clone());
                        }
                    }
                    if new {
                        j.attempts += 1;
                    }
                    j.state = JobState::Sent;
                    j.batch = Some(batch.clone());
                    j.updated_at = unix_now();
                    audit(j, None);
                }
            }
            paths
        };
        if paths.is_empty() {
            return;
        }
        if new {
            let record = Record::Batch {
                batch: batch.clone(),
                cdn,
                jobs: ids.clone(),
            };
            if let Err(e) = self.write(vec![record]).await {
                tracing::error!(error = %e, "invalidation journal: cannot write the batch record; sending anyway");
            }
        }
        let result = sender.send(self, &batch, &paths).await;
        let outcome;
        let mut records = Vec::new();
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            let now = unix_now();
            match &result {
                Ok((cdn_ref, completed)) => {
                    outcome = "accepted";
                    records.push(Record::Sent {
                        batch: batch.clone(),
                        cdn_ref: cdn_ref.clone(),
                        completed: *completed,
                    });
                    for id in &ids {
                        if let Some(j) = jobs.get_mut(id) {
                            j.state = if *completed {
                                JobState::Completed
                            } else {
                                JobState::InProgress
                            };
                            j.cdn_ref = Some(cdn_ref.clone());
                            j.batch = None;
                            j.last_error = None;
                            j.updated_at = now;
                            audit(j, None);
                        }
                    }
                }
                Err(e) if e.transient => {
                    outcome = "retry";
                    for id in &ids {
                        if let Some(j) = jobs.get_mut(id) {
                            let backoff = Duration::from_secs(
                                (1u64 << j.attempts.min(16).saturating_sub(1))
                                    .min(self.settings.max_backoff_secs),
                            );
                            let wait = e.retry_after.map_or(backoff, |r| r.max(backoff));
                            j.state = JobState::Queued;
                            j.batch = None;
                            j.next_attempt = Some(Instant::now() + wait);
                            j.last_error = Some(e.message.clone());
                            j.updated_at = now;
                            audit(j, Some(wait));
                        }
                    }
                }
                Err(e) => {
                    outcome = "failed";
                    let attempts = ids
                        .iter()
                        .filter_map(|id| jobs.get(id))
                        .map(|j| j.attempts)
                        .max()
                        .unwrap_or(1);
                    records.push(Record::Failed {
                        jobs: ids.clone(),
                        error: e.message.clone(),
                        attempts,
                    });
                    for id in &ids {
                        if let Some(j) = jobs.get_mut(id) {
                            j.state = JobState::Failed;
                            j.batch = None;
                            j.last_error = Some(e.message.clone());
                            j.updated_at = now;
                            audit(j, None);
                        }
                    }
                }
            }
        }
        self.metrics
            .sends
            .get_or_create(&SendLabels {
                cdn: cdn.as_str(),
                outcome,
            })
            .inc();
        if !records.is_empty() {
            if let Err(e) = self.write(records).await {
                tracing::error!(error = %e, "invalidation journal: cannot record the CDN's answer");
            }
        }
    }

    /// Asks CloudFront about invalidations in progress.
    async fn poll(self: &Arc<Self>, sender: &Sender, cdn: CdnKind) {
        let Sender::CloudFront = sender else {
            return;
        };
        let cf = self.cloudfront_client().await;
        let refs: Vec<String> = {
            let jobs = self.jobs.lock().expect("jobs lock");
            let mut refs: Vec<String> = jobs
                .values()
                .filter(|j| j.cdn == cdn && j.state == JobState::InProgress)
                .filter_map(|j| j.cdn_ref.clone())
                .collect();
            refs.dedup();
            refs
        };
        for r in refs {
            let Ok(info) = cf.get(&r).await else {
                continue;
            };
            if !info.status.eq_ignore_ascii_case("completed") {
                continue;
            }
            let done: Vec<String> = {
                let mut jobs = self.jobs.lock().expect("jobs lock");
                let mut done = Vec::new();
                for j in jobs.values_mut() {
                    if j.cdn_ref.as_deref() == Some(&r) && j.state == JobState::InProgress {
                        j.state = JobState::Completed;
                        j.updated_at = unix_now();
                        audit(j, None);
                        done.push(j.id.clone());
                    }
                }
                done
            };
            let _ = self.write(vec![Record::Completed { jobs: done }]).await;
        }
    }

    /// Drops the oldest completed jobs beyond [`KEEP_COMPLETED`], and rewrites the journal to
    /// what is unfinished once it has grown past 1 MiB.
    fn forget_completed(self: &Arc<Self>) {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        let completed: Vec<String> = jobs
            .values()
            .filter(|j| j.state == JobState::Completed)
            .map(|j| j.id.clone())
            .collect();
        for id in completed
            .iter()
            .take(completed.len().saturating_sub(KEEP_COMPLETED))
        {
            jobs.remove(id);
        }
        let mut journal = self.journal.lock().expect("journal lock");
        if journal.len > 1 << 20 {
            if let Err(e) = journal.rewrite(&snapshot(&jobs)) {
                tracing::warn!(error = %e, "invalidation journal: cannot compact");
            }
        }
    }
}

/// One audit line per state change.
fn audit(j: &Job, retry_in: Option<Duration>) {
    let paths = j.paths.join(" ");
    match (j.state, &j.last_error) {
        (JobState::Failed, Some(e)) => {
            tracing::error!(target: "audit", action = "invalidation", job = j.id.as_str(), cdn = j.cdn.as_str(), state = "failed", attempts = j.attempts, error = e.as_str(), paths = paths.as_str(), "invalidation refused by the CDN; not retried until restart")
        }
        (JobState::Queued, Some(e)) => {
            tracing::warn!(target: "audit", action = "invalidation", job = j.id.as_str(), cdn = j.cdn.as_str(), state = "queued", attempts = j.attempts, error = e.as_str(), retry_in_secs = retry_in.map_or(0, |d| d.as_secs()), paths = paths.as_str(), "invalidation not accepted; retrying")
        }
        (state, _) => {
            tracing::info!(target: "audit", action = "invalidation", job = j.id.as_str(), cdn = j.cdn.as_str(), state = state.as_str(), attempts = j.attempts, cdn_ref = j.cdn_ref.as_deref().unwrap_or(""), paths = paths.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(job: &str, paths: &[&str]) -> Record {
        Record::Queued {
            job: job.into(),
            cdn: CdnKind::Cloudfront,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            at: 5,
        }
    }

    #[test]
    fn replay_keeps_what_is_unfinished_and_resends_unanswered_batches() {
        let records = vec![
            q("a", &["/v/1"]),
            q("b", &["/v/2"]),
            q("c", &["/v/3"]),
            q("d", &["/v/4"]),
            Record::Batch {
                batch: "B1".into(),
                cdn: CdnKind::Cloudfront,
                jobs: vec!["a".into()],
            },
            Record::Sent {
                batch: "B1".into(),
                cdn_ref: "I1".into(),
                completed: true,
            },
            Record::Batch {
                batch: "B2".into(),
                cdn: CdnKind::Cloudfront,
                jobs: vec!["b".into()],
            },
            Record::Failed {
                jobs: vec!["c".into()],
                error: "CloudFront AccessDenied: no".into(),
                attempts: 1,
            },
        ];
        let (jobs, pending) = replay(&records);
        assert!(!jobs.contains_key("a"), "completed jobs are done");
        assert_eq!(jobs["b"].state, JobState::Sent);
        assert_eq!(
            pending,
            vec![("B2".to_string(), CdnKind::Cloudfront, vec!["b".to_string()])]
        );
        assert_eq!(
            jobs["c"].state,
            JobState::Queued,
            "failed jobs are tried again after a restart"
        );
        assert_eq!(
            jobs["c"].last_error.as_deref(),
            Some("CloudFront AccessDenied: no")
        );
        assert_eq!(jobs["d"].state, JobState::Queued);
        // The snapshot replays to the same jobs.
        let (again, pending_again) = replay(&snapshot(&jobs));
        assert_eq!(
            again.keys().collect::<Vec<_>>(),
            jobs.keys().collect::<Vec<_>>()
        );
        assert_eq!(pending_again, pending);
    }

    #[test]
    fn cloudfront_room_counts_paths_in_progress_once_per_invalidation() {
        let running = vec![
            ("I1".to_string(), vec!["/a".to_string(), "/s/*".to_string()]),
            // Two jobs in one invalidation share its paths.
            ("I1".to_string(), vec!["/a".to_string()]),
            ("I2".to_string(), vec!["/a".to_string()]),
        ];
        assert_eq!(
            cloudfront_room(&running),
            (
                CLOUDFRONT_FILES_IN_PROGRESS - 2,
                CLOUDFRONT_WILDCARDS_IN_PROGRESS - 1
            )
        );
        let full: Vec<(String, Vec<String>)> = (0..16)
            .map(|i| (format!("I{i}"), vec![format!("/d{i}/*")]))
            .collect();
        assert_eq!(cloudfront_room(&full).1, 0);
    }

    #[test]
    fn batches_keep_jobs_whole_send_each_path_once_and_respect_the_limit() {
        let jobs: Vec<(String, Vec<String>)> = (0..5)
            .map(|i| {
                (
                    format!("j{i}"),
                    vec![format!("/p{}", i % 3), "/same".to_string()],
                )
            })
            .collect();
        let b = batches(&jobs, 100);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].1, vec!["/p0", "/same", "/p1", "/p2"]);
        let b = batches(&jobs, 2);
        assert!(b.iter().all(|(_, paths)| paths.len() <= 2));
        assert_eq!(b.iter().map(|(ids, _)| ids.len()).sum::<usize>(), 5);
    }
}
