//! PostgreSQL source and target.
//!
//! Connection strings come from Secrets and are never logged: errors carry
//! the server's message and SQLSTATE, not the URL.

mod catalog;
mod connect;
mod copy;
mod copy_sql;
mod error;
pub mod ledger;
mod resolve;
mod shared;

pub use catalog::{Column, TableRef, table_columns};
pub use connect::connect;
pub use copy::{CopySpec, FailedRecord, RangeCopy, Rows, copy_range, prepare_staging, quote_ident};
pub use error::{PgError, PgErrorKind};
pub use resolve::{ResolveError, resolve_copy_spec};
pub use shared::SharedClient;
