//! TLS for database connections: rustls with the system's root certificates plus
//! `database.ca_file` (Supabase signs its database certificates with its own CA, which is not in
//! any system store). Certificates and host names are always verified; a certificate that does
//! not verify fails the connection (there is no "accept anything" mode).
//!
//! TLS is required for every connection that leaves this machine, decided by the address it
//! really uses (`hostaddr` included), not by the name; on this machine the URL's `sslmode`
//! applies (default `prefer`).

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::net::{IpAddr, ToSocketAddrs};

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

/// Whether the connection really stays on this machine: every host a Unix socket, or every
/// address it connects to a loopback address. With `hostaddr`, that is the address used, whatever
/// the host name says; `localhost` counts only if it resolves to loopback addresses alone, and
/// is then pinned to the first of them (what was checked is what is used).
fn is_local(config: &mut tokio_postgres::Config) -> bool {
    let hostaddrs = config.get_hostaddrs().to_vec();
    if !hostaddrs.is_empty() {
        return hostaddrs.iter().all(IpAddr::is_loopback);
    }
    let hosts = config.get_hosts().to_vec();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let mut pin = None;
    for host in &hosts {
        match host {
            Host::Unix(_) => {}
            Host::Tcp(name) => match name.parse::<IpAddr>() {
                Ok(ip) if ip.is_loopback() => {}
                Ok(_) => return false,
                Err(_) if name == "localhost" => {
                    let resolved: Vec<IpAddr> = (name.as_str(), port)
                        .to_socket_addrs()
                        .map(|addrs| addrs.map(|a| a.ip()).collect())
                        .unwrap_or_default();
                    if resolved.is_empty() || !resolved.iter().all(IpAddr::is_loopback) {
                        return false;
                    }
                    // 127.0.0.1 first: a server listening on loopback usually listens there.
                    pin = resolved
                        .iter()
                        .find(|ip| ip.is_ipv4())
                        .or(resolved.first())
                        .copied();
                }
                // Any other name may resolve anywhere: remote.
                Err(_) => return false,
            },
        }
    }
    if let (Some(ip), 1) = (pin, hosts.len()) {
        config.hostaddr(ip);
    }
    true
}

/// Require TLS unless the connection really stays on this machine (see `is_local`), or when
/// `verify` (`sslmode=verify-ca|verify-full` was asked for): `sslmode=prefer` becomes
/// `require`; `disable` is an error.
///
/// # Errors
/// `sslmode=disable` where TLS is required.
pub fn enforce(
    key: &str,
    config: &mut tokio_postgres::Config,
    verify: bool,
) -> Result<(), ConfigError> {
    if !verify && is_local(config) {
        return Ok(());
    }
    if config.get_ssl_mode() == SslMode::Disable {
        return Err(ConfigError {
            key: Some(key.to_string()),
            message: "TLS is required for a connection that leaves this machine (the host, or \
                      its hostaddr, is not a loopback address or a Unix socket); remove \
                      sslmode=disable"
                .into(),
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
        enforce("database.url", &mut remote, false).unwrap();
        assert_eq!(remote.get_ssl_mode(), SslMode::Require);
        let mut off =
            tokio_postgres::Config::from_str("postgres://u@db.example.com/x?sslmode=disable")
                .unwrap();
        assert!(enforce("database.url", &mut off, false).is_err());
        let mut local =
            tokio_postgres::Config::from_str("postgres://u@127.0.0.1/x?sslmode=disable").unwrap();
        enforce("database.url", &mut local, false).unwrap();
        assert_eq!(local.get_ssl_mode(), SslMode::Disable);
    }
}

#[cfg(test)]
mod address_tests {
    use super::*;
    use std::str::FromStr;

    fn config(url: &str) -> tokio_postgres::Config {
        tokio_postgres::Config::from_str(url).unwrap()
    }

    #[test]
    fn a_loopback_name_with_a_remote_hostaddr_is_remote() {
        let mut c = config("postgres://u:pw@localhost:5432/db?hostaddr=192.0.2.2");
        enforce("database.url", &mut c, false).unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
        let mut off =
            config("postgres://u:pw@localhost:5432/db?hostaddr=192.0.2.2&sslmode=disable");
        assert!(enforce("database.url", &mut off, false).is_err());
    }

    #[test]
    fn localhost_is_pinned_to_the_loopback_address_it_resolves_to() {
        let mut c = config("postgres://u@localhost:5432/db?sslmode=disable");
        enforce("database.url", &mut c, false).unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Disable);
        assert!(c.get_hostaddrs().iter().all(IpAddr::is_loopback));
        assert_eq!(c.get_hostaddrs().len(), 1);
    }

    #[test]
    fn verify_modes_require_tls_even_on_loopback() {
        let mut c = config("postgres://u@127.0.0.1/db");
        enforce("database.url", &mut c, true).unwrap();
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
    }
}
