//! Connecting, with TLS when the connection string asks for it.

use std::sync::Arc;

use tokio_postgres::{Client, Config, NoTls, config::SslMode};

use super::error::{PgError, PgErrorKind};

/// Connects to `url` (a libpq-style URL or key=value string). The
/// connection task runs in the background; its errors surface on the next
/// query. The URL is never part of an error.
pub async fn connect(url: &str) -> Result<Client, PgError> {
    let config: Config = url.parse().map_err(|_| PgError {
        kind: PgErrorKind::Config,
        context: "parse connection string",
        message: "the connection string is not a valid PostgreSQL URL or key=value string".into(),
    })?;
    let client = if config.get_ssl_mode() == SslMode::Disable {
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| PgError::from_driver("connect", &e))?;
        spawn_connection(connection);
        client
    } else {
        let (client, connection) = config
            .connect(tls()?)
            .await
            .map_err(|e| PgError::from_driver("connect", &e))?;
        spawn_connection(connection);
        client
    };
    Ok(client)
}

fn spawn_connection<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed");
        }
    });
}

fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A certificate the store cannot parse is skipped, as libpq would.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::config("TLS setup", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
