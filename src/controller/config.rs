//! Checks of a job's configuration that the API server's schema cannot make:
//! the referenced Secrets and keys exist, and the job does not copy a table
//! onto itself.
//!
//! Secret values are only compared, never copied into a problem's message.

use k8s_openapi::api::core::v1::Secret;

use crate::api::{MigrationJob, Reason, SecretKeyRef};

/// Something a user must fix before the job can run. Its reason and message
/// go into the job's conditions and a Warning event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Why, e.g. [`Reason::SecretNotFound`].
    pub reason: Reason,
    /// What is wrong, naming the field and the object.
    pub message: String,
}

/// A Secret reference of the spec together with its field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRefUse<'a> {
    /// Where in the spec the reference is, e.g. `spec.source.postgres.connectionSecretRef`.
    pub field: &'static str,
    /// The reference.
    pub secret: &'a SecretKeyRef,
}

/// Every Secret the job references.
pub fn secret_refs(job: &MigrationJob) -> Vec<SecretRefUse<'_>> {
    let mut refs = Vec::new();
    if let Some(pg) = &job.spec.source.postgres {
        refs.push(SecretRefUse {
            field: "spec.source.postgres.connectionSecretRef",
            secret: &pg.connection_secret_ref,
        });
    }
    if let Some(pg) = &job.spec.target.postgres {
        refs.push(SecretRefUse {
            field: "spec.target.postgres.connectionSecretRef",
            secret: &pg.connection_secret_ref,
        });
    }
    refs
}

/// Checks one reference against the Secret found (or not) under its name.
/// Returns the referenced value on success.
pub fn check_secret_ref<'s>(
    namespace: &str,
    used: &SecretRefUse<'_>,
    found: Option<&'s Secret>,
) -> Result<&'s [u8], ConfigProblem> {
    let name = &used.secret.name;
    let key = &used.secret.key;
    let Some(secret) = found else {
        return Err(ConfigProblem {
            reason: Reason::SecretNotFound,
            message: format!(
                "Secret {namespace}/{name} referenced by {} does not exist",
                used.field
            ),
        });
    };
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.as_slice())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| v.as_bytes())
        });
    match value {
        None => Err(ConfigProblem {
            reason: Reason::SecretKeyNotFound,
            message: format!(
                "Secret {namespace}/{name} has no key {key:?} (referenced by {}.key)",
                used.field
            ),
        }),
        Some([]) => Err(ConfigProblem {
            reason: Reason::SecretKeyEmpty,
            message: format!(
                "key {key:?} of Secret {namespace}/{name} is empty (referenced by {}.key)",
                used.field
            ),
        }),
        Some(v) => Ok(v),
    }
}

/// Refuses a job whose source and target are the same table of the same
/// database (same connection string, schema and table).
pub fn check_not_self_copy(
    job: &MigrationJob,
    source_url: &[u8],
    target_url: &[u8],
) -> Result<(), ConfigProblem> {
    let (Some(src), Some(dst)) = (&job.spec.source.postgres, &job.spec.target.postgres) else {
        return Ok(());
    };
    if source_url == target_url && src.schema == dst.schema && src.table == dst.table {
        return Err(ConfigProblem {
            reason: Reason::SourceIsTarget,
            message: format!(
                "spec.target.postgres names the same database and table as spec.source.postgres ({}.{}); a job cannot copy a table onto itself",
                src.schema, src.table
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(key: &str, value: &str) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                key.to_owned(),
                ByteString(value.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    fn reference() -> SecretKeyRef {
        SecretKeyRef {
            name: "legacy-db".into(),
            key: "url".into(),
        }
    }

    #[test]
    fn missing_secret_names_secret_and_field() {
        let r = reference();
        let used = SecretRefUse {
            field: "spec.source.postgres.connectionSecretRef",
            secret: &r,
        };
        let p = check_secret_ref("crm", &used, None).unwrap_err();
        assert_eq!(p.reason, Reason::SecretNotFound);
        assert!(p.message.contains("crm/legacy-db"), "{}", p.message);
        assert!(
            p.message
                .contains("spec.source.postgres.connectionSecretRef")
        );
    }

    #[test]
    fn missing_key_names_key() {
        let r = reference();
        let used = SecretRefUse {
            field: "spec.target.postgres.connectionSecretRef",
            secret: &r,
        };
        let s = secret("other", "postgres://u:hunter2@h/db");
        let p = check_secret_ref("crm", &used, Some(&s)).unwrap_err();
        assert_eq!(p.reason, Reason::SecretKeyNotFound);
        assert!(p.message.contains("\"url\""), "{}", p.message);
        assert!(!p.message.contains("hunter2"));
    }

    #[test]
    fn empty_value_is_a_problem_and_value_never_leaks() {
        let r = reference();
        let used = SecretRefUse {
            field: "spec.source.postgres.connectionSecretRef",
            secret: &r,
        };
        let s = secret("url", "");
        assert_eq!(
            check_secret_ref("crm", &used, Some(&s)).unwrap_err().reason,
            Reason::SecretKeyEmpty
        );
        let s = secret("url", "postgres://u:hunter2@h/db");
        assert_eq!(
            check_secret_ref("crm", &used, Some(&s)).unwrap(),
            b"postgres://u:hunter2@h/db"
        );
    }
}
