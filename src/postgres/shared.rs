//! A connection shared by many tasks that reconnects by itself after the
//! server went away (a restart, a failover, a network cut).

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::{connect::connect, error::PgError};

/// A lazily (re)connected client for one connection string.
pub struct SharedClient {
    url: String,
    session_sql: &'static str,
    client: Mutex<Option<Arc<Client>>>,
}

impl std::fmt::Debug for SharedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string holds a password: never print it.
        f.debug_struct("SharedClient").finish_non_exhaustive()
    }
}

impl SharedClient {
    /// A client for `url` that runs `session_sql` on every new connection.
    /// Nothing connects until the first [`get`](Self::get).
    pub fn new(url: String, session_sql: &'static str) -> Self {
        Self {
            url,
            session_sql,
            client: Mutex::new(None),
        }
    }

    /// Whether this client connects to `url`.
    pub fn connects_to(&self, url: &str) -> bool {
        self.url == url
    }

    /// The connected client, connecting first if there is none or the last
    /// one was closed.
    pub async fn get(&self) -> Result<Arc<Client>, PgError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        *slot = None;
        let client = connect(&self.url).await?;
        if !self.session_sql.is_empty() {
            client
                .batch_execute(self.session_sql)
                .await
                .map_err(|e| PgError::from_driver("configure session", &e))?;
        }
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}
