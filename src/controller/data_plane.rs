//! What a reconcile asks the job's databases: the tables fit the spec, the
//! ledger is installed, the plan, the retry round and the progress. And the
//! data-plane writes the plan calls for: planning (as a background task,
//! [`super::planning`]) and scheduling a retry of the failed records.
//!
//! Everything durable lives in the ledger, so this step keeps no state of
//! its own: an operator that restarts (or a new leader) picks a job up from
//! the ledger where the last one left it.

use tokio_postgres::Client;

use super::{
    config::ConfigProblem,
    context::{Context, Side},
    error::{Error, Halt, Result, Step},
    status::Progress,
};
use crate::{
    api::{FailureSample, MigrationJob, Reason},
    postgres::{
        PgError, PgErrorKind, ResolveError, TableRef, connect,
        ledger::{self, PlanProgress, RECENT_WINDOW_SECONDS},
        resolve_copy_spec,
    },
};

/// What the ledger says about a job whose tables fit its spec.
#[derive(Clone, Debug, PartialEq)]
pub enum LedgerView {
    /// No plan yet.
    NotPlanned,
    /// Planned; `spec.retryFailed` asks for a retry round not scheduled yet.
    RetryDue {
        /// The round to schedule.
        round: i64,
    },
    /// Planned; the counters.
    Planned(Progress),
}

/// Failed records shown in status.
const RECENT_FAILURES: i64 = 5;
/// Longest key and error message shown in status (characters).
const MAX_KEY_CHARS: usize = 64;
const MAX_ERROR_CHARS: usize = 200;

/// The connection strings of a job, read from its Secrets. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Urls {
    /// The source's.
    pub source: String,
    /// The target's.
    pub target: String,
}

impl std::fmt::Debug for Urls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Urls(<redacted>)")
    }
}

/// A database failure: a problem the user must fix (bad credentials, no
/// such database, missing privilege) or a transient error to retry.
fn db_failure(side: Side, e: PgError) -> Halt {
    match e.kind {
        PgErrorKind::Config => Halt::Blocked(ConfigProblem {
            reason: match side {
                Side::Source => Reason::SourceUnusable,
                Side::Target => Reason::TargetUnusable,
            },
            message: format!(
                "the {side} database (spec.{side}.postgres.connectionSecretRef) cannot be used: {e}",
                side = side.as_str()
            ),
        }),
        _ => Halt::Retry(Error::Database {
            side: side.as_str(),
            source: e,
        }),
    }
}

/// `map_err` for a database call on `side`.
fn on(side: Side) -> impl Fn(PgError) -> Halt {
    move |e| db_failure(side, e)
}

fn uid(job: &MigrationJob) -> Result<String> {
    job.metadata
        .uid
        .clone()
        .ok_or(Error::MissingMetadata("uid"))
}

fn no_connector() -> Halt {
    Halt::Blocked(ConfigProblem {
        reason: Reason::NoConnector,
        message: "spec.source and spec.target must each set a connector".into(),
    })
}

/// Checks that the tables and columns the spec names exist, installs (or
/// upgrades) the ledger schema in the target once per process, and reads
/// where the job stands in the ledger.
pub async fn observe_ledger(job: &MigrationJob, ctx: &Context, urls: &Urls) -> Step<LedgerView> {
    let uid = uid(job)?;
    let (Some(src), Some(dst)) = (&job.spec.source.postgres, &job.spec.target.postgres) else {
        return Err(no_connector());
    };
    let source_conn = ctx.connection(&uid, Side::Source, &urls.source);
    let target_conn = ctx.connection(&uid, Side::Target, &urls.target);
    let source = source_conn.get().await.map_err(on(Side::Source))?;
    let target = target_conn.get().await.map_err(on(Side::Target))?;
    match resolve_copy_spec(&source, &target, src, dst).await {
        Ok(_) => {}
        Err(ResolveError::Invalid { reason, message }) => {
            return Err(Halt::Blocked(ConfigProblem { reason, message }));
        }
        Err(ResolveError::Source(e)) => return Err(db_failure(Side::Source, e)),
        Err(ResolveError::Target(e)) => return Err(db_failure(Side::Target, e)),
    }
    if !ctx.memory.with(&uid, |m| m.ledger_installed) {
        ledger::install(&target).await.map_err(on(Side::Target))?;
        ctx.memory.with(&uid, |m| m.ledger_installed = true);
    }
    let Some(totals) = ledger::planned(&target, &uid)
        .await
        .map_err(on(Side::Target))?
    else {
        return Ok(LedgerView::NotPlanned);
    };
    let round = job.spec.retry_failed;
    if round > 0
        && ledger::retry_round(&target, &uid)
            .await
            .map_err(on(Side::Target))?
            < round
    {
        return Ok(LedgerView::RetryDue { round });
    }
    progress(&target, &uid, totals.records)
        .await
        .map(LedgerView::Planned)
}

/// A dedicated connection, for work that needs a transaction of its own.
async fn dedicated(url: &str) -> std::result::Result<Client, PgError> {
    connect(url).await
}

/// Measures the source and stores the plan (key ranges of `batchSize`
/// records) in the ledger, reporting how far it got in `progress`. Keys are
/// streamed: memory does not grow with the table. Runs as the job's planning
/// task, on connections of its own (one long transaction).
pub async fn plan(job: &MigrationJob, urls: &Urls, progress: &PlanProgress) -> Step<()> {
    let uid = uid(job)?;
    let Some(src) = &job.spec.source.postgres else {
        return Err(no_connector());
    };
    let source = dedicated(&urls.source).await.map_err(on(Side::Source))?;
    let mut target = dedicated(&urls.target).await.map_err(on(Side::Target))?;
    let table = TableRef {
        schema: src.schema.clone(),
        table: src.table.clone(),
    };
    let batch_size = u64::try_from(job.spec.batch_size.max(1)).unwrap_or(1);
    let started = std::time::Instant::now();
    match ledger::plan(
        &source,
        &mut target,
        &uid,
        &table,
        &src.key_column,
        batch_size,
        progress,
    )
    .await
    {
        Ok(totals) => {
            tracing::info!(
                job = %job.metadata.name.as_deref().unwrap_or_default(),
                records = totals.records,
                batches = totals.batches,
                seconds = started.elapsed().as_secs_f64(),
                "planned"
            );
            Ok(())
        }
        Err(e) if e.kind == PgErrorKind::Config => Err(Halt::Blocked(ConfigProblem {
            reason: Reason::KeyColumnUnusable,
            message: format!("spec.source.postgres.keyColumn: {e}"),
        })),
        Err(e) => Err(db_failure(Side::Source, e)),
    }
}

/// Schedules retry round `round` (`spec.retryFailed`): the failed records
/// become retry batches. Idempotent per round.
pub async fn schedule_retry(job: &MigrationJob, urls: &Urls, round: i64) -> Step<()> {
    let uid = uid(job)?;
    let mut target = dedicated(&urls.target).await.map_err(on(Side::Target))?;
    let batch_size = u64::try_from(job.spec.batch_size.max(1)).unwrap_or(1);
    let keys = ledger::retry_failed(&mut target, &uid, round, batch_size)
        .await
        .map_err(on(Side::Target))?;
    tracing::info!(
        job = %job.metadata.name.as_deref().unwrap_or_default(),
        round,
        records = keys,
        "retrying failed records"
    );
    Ok(())
}

/// The job's counters from the ledger.
async fn progress(ledger: &Client, uid: &str, total_records: u64) -> Step<Progress> {
    let counts = ledger::counts(ledger, uid)
        .await
        .map_err(on(Side::Target))?;
    let recent_failures = if counts.failed_records > 0 {
        ledger::recent_failures(ledger, uid, RECENT_FAILURES)
            .await
            .map_err(on(Side::Target))?
            .into_iter()
            .map(|f| FailureSample {
                key: shorten(&f.key, MAX_KEY_CHARS),
                error: shorten(&f.error, MAX_ERROR_CHARS),
            })
            .collect()
    } else {
        Vec::new()
    };
    let most_attempted = ledger::most_attempted(ledger, uid)
        .await
        .map_err(on(Side::Target))?
        .map(|b| {
            let range = match (&b.lower, &b.upper) {
                (None, None) => String::new(),
                (lower, upper) => format!(
                    " (keys from {} to {})",
                    lower
                        .as_deref()
                        .map_or("the start".into(), |k| shorten(k, MAX_KEY_CHARS)),
                    upper
                        .as_deref()
                        .map_or("the end".into(), |k| shorten(k, MAX_KEY_CHARS)),
                ),
            };
            (
                u32::try_from(b.attempts).unwrap_or(0),
                format!("batch {}{range}", b.batch_id),
            )
        });
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Progress {
        total_records,
        pending_batches: n(counts.pending),
        leased_batches: n(counts.leased),
        done_batches: n(counts.done),
        failed_batches: n(counts.done_with_failures),
        processed_records: n(counts.processed_records),
        failed_records: n(counts.failed_records),
        recent_records: n(counts.recent_records),
        window_seconds: n(RECENT_WINDOW_SECONDS),
        elapsed_seconds: counts.elapsed_seconds,
        recent_failures,
        most_attempted,
    })
}

/// Removes the job's ledger from the target (on deletion). Best effort: a
/// target that is gone for good must not keep the job from being deleted.
pub async fn forget(job: &MigrationJob, target_url: Option<&str>) {
    let Some(uid) = job.metadata.uid.as_deref() else {
        return;
    };
    let Some(url) = target_url else {
        return;
    };
    let attempt = async {
        let mut client = dedicated(url).await?;
        if ledger::planned(&client, uid).await.is_ok() {
            ledger::forget(&mut client, uid).await?;
        }
        Ok::<_, PgError>(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(10), attempt).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not remove the job's ledger"),
        Err(_) => tracing::warn!("removing the job's ledger timed out"),
    }
}

/// At most `max` characters, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "ab…");
        assert_eq!(shorten("ääää", 3), "ää…");
    }

    #[test]
    fn urls_never_print() {
        let urls = Urls {
            source: "postgres://u:hunter2@h/db".into(),
            target: "postgres://u:hunter2@h/db2".into(),
        };
        assert!(!format!("{urls:?}").contains("hunter2"));
    }
}
