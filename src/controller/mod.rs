//! The MigrationJob controller.

pub mod apply;
pub mod children;
pub mod conditions;
pub mod config;
pub mod context;
pub mod data_plane;
pub mod error;
pub mod labels;
pub mod reconcile;
pub mod status;
pub mod triggers;

pub use context::Context;
pub use error::{Error, Result};
