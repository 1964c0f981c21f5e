//! Opening a connection whose socket can be shut down when the connect takes
//! too long.
//!
//! lapin runs each connection on a thread of its own, and dropping the future
//! of `Connection::connect` does not stop that thread: against a broker that
//! accepts TCP but never answers, every timed-out attempt would leave a thread
//! and a socket behind until the peer goes away. Here the TCP connection is
//! made by us, a duplicate of the socket is kept until the handshake is done,
//! and a timeout shuts the socket down, which ends lapin's thread.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_compat::Compat;
use flow_events_core::BackendError;
use lapin::tcp::OwnedTLSConfig;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{AsyncTcpStream, Connection, ConnectionProperties};

use crate::address::Address;
use crate::config::AmqpConfig;
use crate::errors;

/// Opens the connection of a session named for `role` (`publish`,
/// `consume`) to `address`, within the connect timeout.
pub(crate) async fn connect(
    options: &AmqpConfig,
    address: &Address,
    role: &str,
) -> Result<Connection, BackendError> {
    let limit = options.connect_timeout();
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("{} ({role})", options.app_id()).into());
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: if address.is_tls() {
            options.tls_ca_pem().map(str::to_owned)
        } else {
            None
        },
    };
    let what = format!("connecting to {}", address.redacted);
    match open(address.uri.clone(), properties, tls, limit).await {
        Ok(conn) => Ok(conn),
        Err(OpenError::Lapin(e)) => Err(errors::classify(&e, &what, &address.scrub)),
        Err(OpenError::TimedOut) => Err(errors::timeout(&what, limit)),
    }
}

/// A duplicate of the socket being connected, kept to shut it down.
#[derive(Debug, Clone, Default)]
struct SocketHandle(Arc<Mutex<Option<std::net::TcpStream>>>);

impl SocketHandle {
    fn set(&self, socket: std::net::TcpStream) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(socket);
        }
    }

    /// Forgets the duplicate (it would keep the socket open).
    fn release(&self) -> Option<std::net::TcpStream> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }

    /// Shuts the socket down: lapin's side sees the end of the stream.
    fn shut_down(&self) {
        if let Some(socket) = self.release() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// How opening a connection failed.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// lapin's error.
    Lapin(lapin::Error),
    /// The connect took longer than the limit.
    TimedOut,
}

/// Opens a connection to `uri` within `limit`; on timeout the socket is shut down.
pub(crate) async fn open(
    uri: AMQPUri,
    properties: ConnectionProperties,
    tls: OwnedTLSConfig,
    limit: Duration,
) -> Result<Connection, OpenError> {
    let runtime = lapin::runtime::default_runtime().map_err(OpenError::Lapin)?;
    let handle = SocketHandle::default();
    let tls = Arc::new(tls);
    let connect = {
        let handle = handle.clone();
        async move |uri: AMQPUri,
                    _runtime|
                    -> lapin::Result<AsyncTcpStream<Compat<tokio::net::TcpStream>>> {
            let tcp = tokio::time::timeout(
                limit,
                tokio::net::TcpStream::connect((uri.authority.host.as_str(), uri.authority.port)),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
            let _ = tcp.set_nodelay(true);
            let std_tcp = tcp.into_std()?;
            handle.set(std_tcp.try_clone()?);
            let stream =
                AsyncTcpStream::Plain(Compat::new(tokio::net::TcpStream::from_std(std_tcp)?));
            Ok(match uri.scheme {
                AMQPScheme::AMQP => stream,
                AMQPScheme::AMQPS => {
                    stream
                        .into_tls(&uri.authority.host, tls.as_ref().as_ref())
                        .await?
                }
            })
        }
    };
    let result = tokio::time::timeout(
        limit,
        Connection::connector(uri, runtime, connect, properties),
    )
    .await;
    match result {
        Ok(Ok(conn)) => {
            handle.release();
            Ok(conn)
        }
        Ok(Err(e)) => {
            handle.shut_down();
            Err(OpenError::Lapin(e))
        }
        Err(_) => {
            handle.shut_down();
            Err(OpenError::TimedOut)
        }
    }
}
