//! The data-plane step of a reconcile: check the job's tables, plan it once,
//! schedule retries of failed records, and read its progress from the
//! ledger in the target database.
//!
//! Everything durable lives in the ledger, so this step keeps no state of
//! its own: an operator that restarts (or a new leader) picks a job up from
//! the ledger where the last one left it.

use tokio_postgres::Client;

use super::{
    config::ConfigProblem,
    context::{Context, Side},
    error::{Error, Result},
    status::Progress,
};
use crate::{
    api::{FailureSample, MigrationJob},
    postgres::{
        PgError, PgErrorKind, ResolveError, TableRef, connect,
        ledger::{self, RECENT_WINDOW_SECONDS},
        resolve_copy_spec,
    },
};

/// Failed records shown in status.
const RECENT_FAILURES: i64 = 5;
/// Longest key and error message shown in status (characters).
const MAX_KEY_CHARS: usize = 64;
const MAX_ERROR_CHARS: usize = 200;

/// The connection strings of a job, read from its Secrets. Never printed.
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
fn db_failure(side: Side, e: PgError) -> Result<ConfigProblem> {
    match e.kind {
        PgErrorKind::Config => Ok(ConfigProblem {
            reason: match side {
                Side::Source => "SourceUnusable",
                Side::Target => "TargetUnusable",
            },
            message: format!(
                "the {side} database (spec.{side}.postgres.connectionSecretRef) cannot be used: {e}",
                side = side.as_str()
            ),
        }),
        _ => Err(Error::Database {
            side: side.as_str(),
            source: e,
        }),
    }
}

/// Runs `f` and sorts its failure into a problem or a transient error.
macro_rules! on {
    ($side:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return db_failure($side, e).map(Err),
        }
    };
}

fn uid(job: &MigrationJob) -> Result<String> {
    job.metadata
        .uid
        .clone()
        .ok_or(Error::MissingMetadata("uid"))
}

/// Checks that the tables and columns the spec names exist, and installs
/// the ledger schema in the target. Returns whether the job is planned.
pub async fn prepare(
    job: &MigrationJob,
    ctx: &Context,
    urls: &Urls,
) -> Result<Result<bool, ConfigProblem>> {
    let uid = uid(job)?;
    let (Some(src), Some(dst)) = (&job.spec.source.postgres, &job.spec.target.postgres) else {
        return Ok(Err(ConfigProblem {
            reason: "NoConnector",
            message: "spec.source and spec.target must each set a connector".into(),
        }));
    };
    let source = on!(
        Side::Source,
        ctx.connection(&uid, Side::Source, &urls.source).get().await
    );
    let target = on!(
        Side::Target,
        ctx.connection(&uid, Side::Target, &urls.target).get().await
    );
    match resolve_copy_spec(&source, &target, src, dst).await {
        Ok(_) => {}
        Err(ResolveError::Invalid { reason, message }) => {
            return Ok(Err(ConfigProblem { reason, message }));
        }
        Err(ResolveError::Source(e)) => return db_failure(Side::Source, e).map(Err),
        Err(ResolveError::Target(e)) => return db_failure(Side::Target, e).map(Err),
    }
    if ctx.needs_ledger_install(&uid) {
        on!(Side::Target, ledger::install(&target).await);
        ctx.ledger_installed(&uid);
    }
    let planned = on!(Side::Target, ledger::planned(&target, &uid).await);
    Ok(Ok(planned.is_some()))
}

/// A dedicated connection, for work that needs a transaction of its own.
async fn dedicated(url: &str) -> std::result::Result<Client, PgError> {
    connect(url).await
}

/// Measures the source and stores the plan (key ranges of `batchSize`
/// records) in the ledger. Keys are streamed: memory does not grow with the
/// table.
pub async fn plan(job: &MigrationJob, urls: &Urls) -> Result<Result<(), ConfigProblem>> {
    let uid = uid(job)?;
    let Some(src) = &job.spec.source.postgres else {
        return Ok(Ok(()));
    };
    let source = on!(Side::Source, dedicated(&urls.source).await);
    let mut target = on!(Side::Target, dedicated(&urls.target).await);
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
        &Default::default(),
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
            Ok(Ok(()))
        }
        Err(e) if e.kind == PgErrorKind::Config => Ok(Err(ConfigProblem {
            reason: "KeyColumnUnusable",
            message: format!("spec.source.postgres.keyColumn: {e}"),
        })),
        Err(e) => db_failure(Side::Source, e).map(Err),
    }
}

/// Schedules the failed records for another attempt when `spec.retryFailed`
/// went up since the ledger last did.
pub async fn retry_if_asked(
    job: &MigrationJob,
    ctx: &Context,
    urls: &Urls,
) -> Result<Result<(), ConfigProblem>> {
    let round = job.spec.retry_failed;
    if round == 0 {
        return Ok(Ok(()));
    }
    let uid = uid(job)?;
    let ledger = on!(
        Side::Target,
        ctx.connection(&uid, Side::Target, &urls.target).get().await
    );
    if on!(Side::Target, ledger::retry_round(&ledger, &uid).await) >= round {
        return Ok(Ok(()));
    }
    let mut target = on!(Side::Target, dedicated(&urls.target).await);
    let batch_size = u64::try_from(job.spec.batch_size.max(1)).unwrap_or(1);
    let keys = on!(
        Side::Target,
        ledger::retry_failed(&mut target, &uid, round, batch_size).await
    );
    tracing::info!(
        job = %job.metadata.name.as_deref().unwrap_or_default(),
        round,
        records = keys,
        "retrying failed records"
    );
    Ok(Ok(()))
}

/// The job's counters from the ledger.
pub async fn progress(
    job: &MigrationJob,
    ctx: &Context,
    urls: &Urls,
) -> Result<Result<Progress, ConfigProblem>> {
    let uid = uid(job)?;
    let ledger = on!(
        Side::Target,
        ctx.connection(&uid, Side::Target, &urls.target).get().await
    );
    let totals = on!(Side::Target, ledger::planned(&ledger, &uid).await).unwrap_or_default();
    let counts = on!(Side::Target, ledger::counts(&ledger, &uid).await);
    let recent_failures = if counts.failed_records > 0 {
        on!(
            Side::Target,
            ledger::recent_failures(&ledger, &uid, RECENT_FAILURES).await
        )
        .into_iter()
        .map(|f| FailureSample {
            key: shorten(&f.key, MAX_KEY_CHARS),
            error: shorten(&f.error, MAX_ERROR_CHARS),
        })
        .collect()
    } else {
        Vec::new()
    };
    let most_attempted = on!(Side::Target, ledger::most_attempted(&ledger, &uid).await).map(|b| {
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
    Ok(Ok(Progress {
        total_records: totals.records,
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
    }))
}

/// Removes the job's ledger from the target (on deletion). Best effort: a
/// target that is gone for good must not keep the job from being deleted.
pub async fn forget(job: &MigrationJob, ctx: &Context, target_url: Option<&str>) {
    let Some(uid) = job.metadata.uid.as_deref() else {
        return;
    };
    ctx.forget_connections(uid);
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
