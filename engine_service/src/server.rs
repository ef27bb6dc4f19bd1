//! Serving: the tonic router with EngineService, grpc.health.v1 (SERVING)
//! and reflection (v1 and v1alpha), on a listener the caller bound, until
//! the caller's shutdown future completes. Taking the listener and shutdown
//! as arguments lets tests run a server on port 0 with their own signal.
//!
//! Transport security: with [`TlsPem`] the server speaks only TLS (rustls);
//! with a client CA as well, only clients presenting a certificate signed by
//! it complete the handshake (mutual TLS), so a stray client on the network
//! cannot drive the engine.
use std::future::Future;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::pb::engine_service_server::EngineServiceServer;
use crate::service::Engine;

/// The encoded descriptor set of the contract, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("engine_descriptor");

/// PEM material for serving TLS.
#[derive(Clone)]
pub struct TlsPem {
    /// The server's certificate chain.
    pub cert: Vec<u8>,
    /// The certificate's private key.
    pub key: Vec<u8>,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<Vec<u8>>,
}

/// Serves plaintext until `shutdown` resolves, then drains in-flight calls.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    run_with(listener, None, shutdown).await
}

/// Serves (over TLS when `tls` is set) until `shutdown` resolves.
pub async fn run_with(
    listener: TcpListener,
    tls: Option<TlsPem>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<EngineServiceServer<Engine>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("reflection service from the built-in descriptor set");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("reflection service from the built-in descriptor set");
    let mut builder = tonic::transport::Server::builder();
    if let Some(pem) = tls {
        let mut config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(pem.cert, pem.key));
        if let Some(ca) = pem.client_ca {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder.tls_config(config)?;
    }
    builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(EngineServiceServer::new(Engine))
        // TCP_NODELAY on every accepted connection: `Server::tcp_nodelay`
        // applies only to listeners tonic binds itself. Without it Nagle's
        // algorithm holds a reply's last small frame until the client's
        // delayed ACK (about 40 ms on Linux): every unary call and the end
        // of every stream took that long.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
    }
}
