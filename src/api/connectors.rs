//! Source and target connectors.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key in a Secret in the MigrationJob's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the MigrationJob.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret whose value is the connection string, for example
    /// `postgres://user:password@host:5432/db?sslmode=require`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Where records are read from. Exactly one connector must be set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("[has(self.postgres)].filter(c, c).size() == 1").message("exactly one source connector must be set (supported: postgres)"))]
pub struct SourceSpec {
    /// Read rows from a PostgreSQL table, in key order, in ranges of the key column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSource>,
}

/// Where records are written to. Exactly one connector must be set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("[has(self.postgres)].filter(c, c).size() == 1").message("exactly one target connector must be set (supported: postgres)"))]
pub struct TargetSpec {
    /// Write rows into a PostgreSQL table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresTarget>,
}

/// A PostgreSQL table to read from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.columns) || self.keyColumn in self.columns").message("columns must include keyColumn"))]
pub struct PostgresSource {
    /// Secret key holding the source's connection string. Workers read it from
    /// the Secret; Freight never copies it into status, events or logs.
    pub connection_secret_ref: SecretKeyRef,
    /// Schema that holds the table. Defaults to `public`.
    #[serde(default = "default_schema")]
    #[schemars(length(min = 1, max = 63))]
    pub schema: String,
    /// Table to read. Taken as a literal identifier (quoted), not as SQL.
    #[schemars(length(min = 1, max = 63))]
    pub table: String,
    /// Column whose values split the table into batches (key ranges). It must be
    /// unique and not null, usually the primary key; integer and text keys are supported.
    #[schemars(length(min = 1, max = 63))]
    pub key_column: String,
    /// Columns to copy. Defaults to every column of the table. When set, it must
    /// include `keyColumn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1600), inner(length(min = 1, max = 63)))]
    pub columns: Option<Vec<String>>,
}

/// How rows are written to the target table.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Insert, or update the row with the same key if it exists. A batch that runs
    /// twice leaves the target unchanged, so retries never duplicate rows.
    #[default]
    Upsert,
    /// Plain insert. A row whose key already exists in the target fails and is
    /// counted as a failed record.
    Insert,
}

/// A PostgreSQL table to write to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresTarget {
    /// Secret key holding the target's connection string. Workers read it from
    /// the Secret; Freight never copies it into status, events or logs.
    pub connection_secret_ref: SecretKeyRef,
    /// Schema that holds the table. Defaults to `public`.
    #[serde(default = "default_schema")]
    #[schemars(length(min = 1, max = 63))]
    pub schema: String,
    /// Table to write. It must exist, with the source's columns (by name) and a
    /// unique constraint on the key column for `upsert`.
    #[schemars(length(min = 1, max = 63))]
    pub table: String,
    /// `upsert` (default): insert or update by key, idempotent. `insert`: plain
    /// insert; rows whose key already exists fail.
    #[serde(default)]
    pub mode: WriteMode,
}

fn default_schema() -> String {
    "public".to_owned()
}
