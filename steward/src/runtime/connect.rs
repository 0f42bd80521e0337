//! Connecting to the broker: a refusal is an error at start, an unreachable broker is not.
//!
//! Start makes one direct attempt first (every URL once, bounded by [`CHECK_TIMEOUT`]). If it
//! connects, that connection is the node's client (it reconnects forever afterwards). If the
//! broker answers but refuses the node — credentials not accepted, an untrusted certificate, a
//! TLS handshake refused, TLS required by one side only — start fails with
//! [`Error::BrokerAuth`] saying what was refused and what to do, and nothing runs. If no broker
//! answers (down, unreachable, too slow), the node starts offline with a client that keeps
//! retrying in the background, as before.
//!
//! While the node runs, a [`Watch`] task follows the client's events: a refusal seen while
//! (re)connecting — credentials revoked or expired, a changed password, a broker certificate
//! no longer trusted — is reported once per outage through the node's error reporting
//! ([`ErrorReportKind::BrokerAuth`]), instead of the client retrying silently.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{ClientError, ConnectError, ConnectErrorKind, Event, ServerError};
use tokio::sync::{mpsc, watch};

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::security::broker_auth::{self, Prepared};

/// How long start waits for the first attempt to tell a refusal from an unreachable broker.
/// A broker that takes longer to answer is treated as unreachable: the node starts offline,
/// and a refusal found later is reported through the error reporting instead.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// While the node cannot connect, how often the watcher asks the broker directly why (a
/// failed reconnect only says "IO error").
const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// The connected (or background-connecting) client and the watcher to start once the node
/// exists.
pub(crate) struct Connected {
    pub client: async_nats::Client,
    pub watch: Watch,
}

/// Follows the client's connection events for the node's life (see the module docs).
pub(crate) struct Watch {
    events: mpsc::UnboundedReceiver<Event>,
    prepared: Arc<Prepared>,
    addrs: Vec<async_nats::ServerAddr>,
    brokers: String,
}

/// Parses the broker URLs, each on its own: a cluster is a list of servers tried in turn.
fn server_addrs(cfg: &NodeConfig) -> Result<Vec<async_nats::ServerAddr>> {
    cfg.brokers
        .iter()
        .flat_map(|u| u.split(','))
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| Error::config_from(format!("broker URL {u:?} is not valid: {e}"), e))
        })
        .collect()
}

/// The node's client options: credentials and TLS from `prepared`, reconnecting forever.
/// `fast` makes every attempt start at once (the check at start tries each URL once).
fn options(
    cfg: &NodeConfig,
    prepared: &Prepared,
    fast: Arc<AtomicBool>,
) -> async_nats::ConnectOptions {
    prepared
        .options
        .clone()
        .name(format!("steward-{}", cfg.name))
        .max_reconnects(None)
        .subscription_capacity(1 << 16)
        .client_capacity(1 << 14)
        .reconnect_delay_callback(move |attempts| {
            // async-nats asks before the very first attempt too (attempts = 1): no delay then.
            if attempts <= 1 || fast.load(Ordering::Relaxed) {
                Duration::ZERO
            } else {
                Duration::from_millis((100u64 << attempts.min(5) as u64).min(2000))
            }
        })
}

/// Connects the node's client; see the module docs. `conn_tx` follows the connection state.
pub(crate) async fn connect(
    cfg: &NodeConfig,
    conn_tx: Arc<watch::Sender<bool>>,
) -> Result<Connected> {
    let addrs = server_addrs(cfg)?;
    let prepared = Arc::new(broker_auth::prepare(&cfg.broker_auth, &cfg.broker_tls)?);
    let brokers = cfg.brokers.join(",");
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let name = cfg.name.clone();
    let callback = move |event: Event| {
        let (tx, ev_tx, name) = (conn_tx.clone(), ev_tx.clone(), name.clone());
        async move {
            match &event {
                Event::Connected => {
                    tracing::info!(node = %name, "connected to the broker");
                    let _ = tx.send(true);
                }
                Event::Disconnected => {
                    tracing::warn!(node = %name, "lost the broker; messages wait in the outbox");
                    let _ = tx.send(false);
                }
                other => tracing::debug!(node = %name, "broker event: {other}"),
            }
            let _ = ev_tx.send(event);
        }
    };
    let fast = Arc::new(AtomicBool::new(true));
    let first = options(cfg, &prepared, fast.clone())
        .event_callback(callback.clone())
        .connect(addrs.clone());
    let client = match tokio::time::timeout(CHECK_TIMEOUT, first).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            if let Some(reason) = refusal(&e, &prepared) {
                return Err(Error::BrokerAuth {
                    broker: brokers,
                    reason,
                });
            }
            tracing::warn!(node = %cfg.name, "the broker {brokers} is not reachable ({e}); starting offline, messages wait in the outbox and the connection is retried in the background");
            background(cfg, &prepared, &addrs, callback).await?
        }
        Err(_) => {
            tracing::warn!(node = %cfg.name, "the broker {brokers} did not answer within {CHECK_TIMEOUT:?}; starting offline, the connection is retried in the background");
            background(cfg, &prepared, &addrs, callback).await?
        }
    };
    fast.store(false, Ordering::Relaxed);
    Ok(Connected {
        client,
        watch: Watch {
            events: ev_rx,
            prepared,
            addrs,
            brokers,
        },
    })
}

/// A client that connects in the background (returns at once).
async fn background<F, Fut>(
    cfg: &NodeConfig,
    prepared: &Prepared,
    addrs: &[async_nats::ServerAddr],
    callback: F,
) -> Result<async_nats::Client>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + Sync + 'static,
{
    options(cfg, prepared, Arc::new(AtomicBool::new(false)))
        .event_callback(callback)
        .retry_on_initial_connect()
        .connect(addrs.to_vec())
        .await
        .map_err(|e| Error::broker_unavailable_from(format!("{}: {e}", cfg.brokers.join(",")), e))
}

/// One direct attempt at every URL, as at start: `Some(reason)` if the broker refused us.
async fn check(prepared: &Prepared, addrs: &[async_nats::ServerAddr]) -> Option<String> {
    let attempt = prepared
        .options
        .clone()
        .name("steward-check")
        .reconnect_delay_callback(|_| Duration::ZERO)
        .connect(addrs.to_vec());
    match tokio::time::timeout(CHECK_TIMEOUT, attempt).await {
        Ok(Err(e)) => refusal(&e, prepared),
        // Connected: the node's own client will too; let this one go.
        Ok(Ok(_)) | Err(_) => None,
    }
}

/// The reason the broker refused us, or `None` if the failure says nothing about us (the
/// broker is down, unreachable, too slow, or full).
fn refusal(e: &ConnectError, prepared: &Prepared) -> Option<String> {
    match e.kind() {
        ConnectErrorKind::AuthorizationViolation => Some(prepared.auth_refused(None)),
        ConnectErrorKind::Authentication => Some(format!(
            "signing the broker's challenge with the node's key failed ({e}); check the nkey seed or credentials file"
        )),
        ConnectErrorKind::Tls => Some(format!(
            "TLS could not be set up ({e}); check the CA, client certificate and key files"
        )),
        _ => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if let Some(tls) = rustls_error(s) {
                    return Some(tls_refused(tls, prepared));
                }
                if let Some(ServerError::Other(text)) = s.downcast_ref::<ServerError>() {
                    if is_auth_text(text) {
                        return Some(prepared.auth_refused(Some(text)));
                    }
                }
                source = s.source();
            }
            None
        }
    }
}

/// The TLS error inside an error of the chain (the TLS layer wraps it in an `io::Error`).
fn rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a async_nats::rustls::Error> {
    if let Some(r) = e.downcast_ref::<async_nats::rustls::Error>() {
        return Some(r);
    }
    e.downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<async_nats::rustls::Error>())
}

/// What a TLS failure means for the operator.
fn tls_refused(e: &async_nats::rustls::Error, prepared: &Prepared) -> String {
    use async_nats::rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "its TLS certificate is not valid for the host name in the broker URL ({e}); connect with a name the certificate was issued for"
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => format!(
            "its TLS certificate has expired ({e}); renew the broker's certificate"
        ),
        E::InvalidCertificate(_) => format!(
            "its TLS certificate is not trusted ({e}); give the CA certificate that signed it as the TLS CA file"
        ),
        E::AlertReceived(
            A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::AccessDenied
            | A::HandshakeFailure,
        ) => match prepared.client_cert() {
            Some(cert) => format!(
                "it refused the TLS handshake ({e}): it did not accept the client certificate {}; give a client certificate and key signed by a CA the broker trusts",
                cert.display()
            ),
            None => format!(
                "it refused the TLS handshake ({e}): it requires a client certificate; give a client certificate and key signed by a CA the broker trusts"
            ),
        },
        _ => format!(
            "the TLS handshake failed ({e}); TLS is required (a CA or client certificate was given, a tls:// URL, or require TLS) but the broker may not offer it: enable TLS on the broker or remove the TLS settings"
        ),
    }
}

/// True for the broker's words for refused credentials (`Authorization Violation`,
/// `User Authentication Expired`, `User Authentication Revoked`, ...). Not for
/// `Authentication Timeout`: the CONNECT came too late (a slow link), nothing was refused.
fn is_auth_text(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    (t.contains("authorization") || t.contains("authentication")) && !t.contains("timeout")
}

/// Where the watcher sends a refusal, as text: the node reports it (log, listeners, central).
pub(crate) type Report = Box<dyn Fn(String) + Send + Sync>;

impl Watch {
    /// Follows the events until `shutdown` turns true; a refusal goes to `report` once per
    /// outage. Returns the task's handle for the node to keep.
    pub(crate) fn spawn(
        self,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        report: Report,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::select! {
                _ = self.run(report) => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
        })
    }

    async fn run(mut self, report: Report) {
        let mut connected = false;
        let mut reported = false;
        let mut last_check: Option<Instant> = None;
        while let Some(event) = self.events.recv().await {
            let refused = match &event {
                Event::Connected => {
                    connected = true;
                    reported = false;
                    last_check = None;
                    None
                }
                Event::Disconnected => {
                    connected = false;
                    None
                }
                Event::ServerError(ServerError::AuthorizationViolation) => {
                    Some(self.prepared.auth_refused(None))
                }
                Event::ServerError(ServerError::Other(text)) if is_auth_text(text) => {
                    Some(self.prepared.auth_refused(Some(text)))
                }
                Event::ClientError(ClientError::Other(text)) if !reported && !connected => {
                    if *text == ConnectErrorKind::AuthorizationViolation.to_string() {
                        Some(self.prepared.auth_refused(None))
                    } else if last_check.is_none_or(|t| t.elapsed() >= RECHECK_EVERY) {
                        // The client says only "IO error": ask the broker directly why.
                        last_check = Some(Instant::now());
                        check(&self.prepared, &self.addrs).await
                    } else {
                        None
                    }
                }
                _ => None,
            };
            let Some(reason) = refused else { continue };
            if reported {
                continue;
            }
            reported = true;
            let err = Error::BrokerAuth {
                broker: self.brokers.clone(),
                reason,
            };
            report(err.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::rustls::{AlertDescription, CertificateError, Error as TlsError};

    fn prepared(auth: crate::BrokerAuth) -> Prepared {
        broker_auth::prepare(&auth, &crate::BrokerTls::default()).unwrap()
    }

    /// A connect error as async-nats reports a failed TLS handshake: an `io::Error` around the
    /// TLS error, under the kind `Io`.
    fn tls_failure(e: TlsError) -> ConnectError {
        ConnectError::with_source(
            ConnectErrorKind::Io,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    }

    #[test]
    fn auth_words_of_the_broker() {
        assert!(is_auth_text("Authorization Violation"));
        assert!(is_auth_text("User Authentication Expired"));
        assert!(is_auth_text("User Authentication Revoked"));
        assert!(!is_auth_text("Authentication Timeout"));
        assert!(!is_auth_text("maximum connections exceeded"));
        assert!(!is_auth_text("Permissions Violation for Publish to \"x\""));
    }

    #[test]
    fn refusals_are_told_from_outages() {
        let p = prepared(crate::BrokerAuth::Token("t".into()));
        let why = refusal(
            &ConnectError::new(ConnectErrorKind::AuthorizationViolation),
            &p,
        );
        assert!(why.unwrap().contains("token was not accepted"));
        let untrusted = tls_failure(TlsError::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(refusal(&untrusted, &p)
            .unwrap()
            .contains("certificate is not trusted"));
        let expired = tls_failure(TlsError::InvalidCertificate(CertificateError::Expired));
        assert!(refusal(&expired, &p)
            .unwrap()
            .contains("renew the broker's certificate"));
        let name = tls_failure(TlsError::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        assert!(refusal(&name, &p)
            .unwrap()
            .contains("not valid for the host name"));
        let alert = tls_failure(TlsError::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        assert!(refusal(&alert, &p)
            .unwrap()
            .contains("requires a client certificate"));
        let expired_user = ConnectError::with_source(
            ConnectErrorKind::Io,
            ServerError::Other("User Authentication Expired".into()),
        );
        assert!(refusal(&expired_user, &p)
            .unwrap()
            .contains("the broker said: User Authentication Expired"));
        // Outages: nothing about us.
        let refused_tcp = ConnectError::with_source(
            ConnectErrorKind::Io,
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(refusal(&refused_tcp, &p), None);
        assert_eq!(
            refusal(&ConnectError::new(ConnectErrorKind::TimedOut), &p),
            None
        );
        let slow = ConnectError::with_source(
            ConnectErrorKind::Io,
            ServerError::Other("Authentication Timeout".into()),
        );
        assert_eq!(refusal(&slow, &p), None);
    }
}
