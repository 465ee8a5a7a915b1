//! TLS for database connections: rustls with the system's root certificates plus
//! `database.ca_file` (Supabase signs its database certificates with its own CA, which is not in
//! any system store). Certificates and host names are always verified; a certificate that does
//! not verify fails the connection (there is no "accept anything" mode).
//!
//! TLS is required for every host that is not this machine; for local hosts the URL's `sslmode`
//! applies (default `prefer`).

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::ConfigError;

/// The TLS connector for every connection of this process.
///
/// # Errors
/// `database.ca_file` unreadable or holding no certificate.
pub fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, ConfigError> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are not fatal: ca_file may be all that is needed.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let bad = |message: String| ConfigError {
            key: Some("database.ca_file".into()),
            message,
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?
        {
            let cert =
                cert.map_err(|e| bad(format!("{} is not valid PEM: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("{}: unusable certificate: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad(format!("{} holds no certificate", path.display())));
        }
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Whether every host of the target is this machine (loopback or a unix socket).
pub fn is_local(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(false)
        }
    })
}

/// Require TLS for non-local hosts: `sslmode=prefer` becomes `require`; `disable` is an error.
///
/// # Errors
/// `sslmode=disable` for a remote host.
pub fn enforce(key: &str, config: &mut tokio_postgres::Config) -> Result<(), ConfigError> {
    if is_local(config) {
        return Ok(());
    }
    if config.get_ssl_mode() == SslMode::Disable {
        return Err(ConfigError {
            key: Some(key.to_string()),
            message: "TLS is required for non-local hosts; remove sslmode=disable".into(),
        });
    }
    config.ssl_mode(SslMode::Require);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn remote_hosts_get_tls_required_and_cannot_disable_it() {
        let mut remote = tokio_postgres::Config::from_str("postgres://u@db.example.com/x").unwrap();
        enforce("database.url", &mut remote).unwrap();
        assert_eq!(remote.get_ssl_mode(), SslMode::Require);
        let mut off =
            tokio_postgres::Config::from_str("postgres://u@db.example.com/x?sslmode=disable")
                .unwrap();
        assert!(enforce("database.url", &mut off).is_err());
        let mut local =
            tokio_postgres::Config::from_str("postgres://u@127.0.0.1/x?sslmode=disable").unwrap();
        enforce("database.url", &mut local).unwrap();
        assert_eq!(local.get_ssl_mode(), SslMode::Disable);
    }
}
