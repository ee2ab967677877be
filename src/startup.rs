//! `Application::build`: the one way to assemble the gateway, used by `serve` and by the
//! integration tests (which bind port 0 and talk to it over real mTLS).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::{Extensions, Server, ServerHandle};
use actix_web::rt::net::TcpStream;
use actix_web::{App, HttpServer, middleware, web};
use anyhow::Context;

use crate::api::{self, AppState, identity::PeerCertificate};
use crate::clock::{SystemClock, TimeSource};
use crate::config::Config;
use crate::delivery::relay::Relay;
use crate::delivery::topology::Topology;
use crate::domain::AgencyRegistry;
use crate::governance::checkpoints::Checkpointer;
use crate::governance::person_keys::PersonKeyer;
use crate::intake::schema::SchemaRegistry;
use crate::metrics::{HttpLabels, Metrics};
use crate::reload::{self, ConfigSource, Reloader, ReloaderParts};
use crate::runtime::{Runtime, RuntimeCell, Shared};
use crate::security::handshake;
use crate::sla::scanner::Scanner;
use crate::store::AuditRecord;
use crate::store::Store;
use crate::store::committer::{CommitLimits, Committer};
use crate::worker::Worker;

/// How long each background worker may take to stop.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Committed batches of referrals waiting for the relay in memory; beyond this they wait
/// in the outbox for it to claim them.
const RELAY_HAND_OFF_DEPTH: usize = 8;

pub struct Application {
    addr: SocketAddr,
    ops_addr: Option<SocketAddr>,
    staff_addr: Option<SocketAddr>,
    /// The agency listener, then the ops and staff listeners when configured.
    servers: Vec<Server>,
    store: Store,
    /// Re-reads the configuration (when built with a source).
    reloader: Option<Arc<Reloader>>,
    /// The background workers, in the order they are stopped: the scanner first (what it
    /// flags goes out through the relay), then the relay, the tally of unverified
    /// refusals, the committer, the audit checkpointer and the staff key refresher.
    workers: Vec<Worker>,
    /// Refusals of unverified callers waiting for their audit entry.
    refusals: Arc<api::refusals::RefusalTally>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As `build`, with another source of "now" (tests move it to exercise SLA clocks).
    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn TimeSource>,
    ) -> anyhow::Result<Self> {
        Self::build_reloadable(config, clock, None).await
    }

    /// As `build_with_clock`; with a `source`, [`Application::reloader`] re-reads the
    /// configuration from it (SIGHUP under `run_until_signalled`).
    pub async fn build_reloadable(
        config: Config,
        clock: Arc<dyn TimeSource>,
        source: Option<Box<dyn ConfigSource>>,
    ) -> anyhow::Result<Self> {
        // The same checks as `config check` and every reload.
        let checked = reload::check(config).map_err(|problems| {
            anyhow::anyhow!(
                "the configuration has {} problem(s):\n  - {}",
                problems.len(),
                problems.join("\n  - ")
            )
        })?;
        for warning in &checked.warnings {
            tracing::warn!("{warning}");
        }
        let config = checked.config.clone();
        if let Some(head_file) = &config.audit.head_file {
            crate::config::check_head_file_writable(head_file).map_err(anyhow::Error::msg)?;
        }
        let schemas = checked.schemas.clone();
        let in_force = reload::InForce::of(&checked);
        let store = Store::open(&config)
            .await
            .context("connecting to the database (database.url / REFGW_DATABASE_URL)")?;
        store.migrate_if_needed().await.context(
            "applying database migrations (on PostgreSQL, run `referral-gateway migrate --grant-to <runtime role>` as the owner role first)",
        )?;
        warn_about_audit_powers(&store).await;

        let signing_key = Arc::new(checked.signing_key);
        let keyer = Arc::new(PersonKeyer::new(&config.audit.person_key_secret));
        store
            .audit(
                &AuditRecord::new("gateway", crate::domain::audit::AuditAction::ConfigLoaded)
                    .detail(format!(
                        "{} agencies; {} sharing agreements; signing key {}; person-key secret {}",
                        config.registry.agencies().count(),
                        config.sharing_agreements.len(),
                        signing_key.key_id(),
                        keyer.fingerprint()
                    )),
                clock.now(),
            )
            .await
            .context("writing the audit log")?;
        // The workers are built here and started only once every listener is bound.
        let checkpointer = Checkpointer::new(
            store.clone(),
            signing_key.clone(),
            config.audit.checkpoint_every,
            config.audit.checkpoint_interval,
        )
        .with_head_file(config.audit.head_file.clone());
        if config.staff.as_ref().is_some_and(|s| s.dev_tokens) {
            tracing::warn!(
                "[staff] dev_tokens = true: development staff tokens are accepted; never use this configuration with real data"
            );
        }
        let jwks_refresher = match config.staff.as_ref() {
            Some(staff) => match &staff.jwks_url {
                Some(source) => Some(
                    crate::staff_auth::jwks::JwksRefresher::new(staff.auth.clone(), source.clone())
                        .context("staff.jwks_url")?,
                ),
                None => None,
            },
            None => None,
        };
        let wake = Arc::new(tokio::sync::Notify::new());
        let metrics = Arc::new(Metrics::new());
        // From here on every referral, event and audit entry of this process is written
        // by the committer (the entry above was written before anything else could write).
        let (commits, committer) = Committer::new(
            store.clone(),
            CommitLimits {
                batch_max: config.database.commit_batch_max,
                queue_depth: config.database.commit_queue_depth,
                transactions: config.database.commit_transactions,
            },
        );
        let mut committer = committer.with_metrics(metrics.clone());
        let store = store.with_committer(commits);
        if let Some(dir) = &config.tls.issued_dir {
            metrics.set_certificate_expiries(certificate_expiries(
                dir,
                &config.registry,
                &config.tls.crls,
            )?);
        }
        let (relay, relay_status, topology_updates) = if config.relay.enabled {
            let topology = Topology::new(&config.amqp.namespace, &config.registry);
            let (updates, updated) = tokio::sync::watch::channel(topology.clone());
            let mut relay = Relay::new(
                store.clone(),
                topology,
                config.amqp.url.clone(),
                config.relay.clone(),
                wake.clone(),
            )
            .with_metrics(metrics.clone())
            .with_clock(clock.clone())
            .with_topology_updates(updated);
            committer = committer.with_relay(relay.hand_off(RELAY_HAND_OFF_DEPTH));
            let status = relay.status();
            (Some(relay), Some(status), Some(updates))
        } else {
            (None, None, None)
        };
        let scanner = config.sla.scanner_enabled.then(|| {
            Scanner::new(
                store.clone(),
                clock.clone(),
                config.sla.scan_interval,
                wake.clone(),
            )
            .with_metrics(metrics.clone())
        });
        let shared = Shared {
            store: store.clone(),
            relay_wake: wake,
            keyer,
        };
        let runtime = Arc::new(RuntimeCell::new(Runtime::new(
            1,
            clock.now(),
            &config,
            schemas,
            &shared,
        )));
        let agency_tls = checked.agency_tls;
        let reloader = source.map(|source| {
            Arc::new(Reloader::new(
                ReloaderParts {
                    source,
                    cell: runtime.clone(),
                    verifier: agency_tls.verifier.clone(),
                    shared: shared.clone(),
                    metrics: metrics.clone(),
                    clock: clock.clone(),
                    topology: topology_updates,
                },
                in_force,
            ))
        });
        let refusals = Arc::new(api::refusals::RefusalTally::default());
        let state = web::Data::new(AppState {
            runtime: runtime.clone(),
            store: store.clone(),
            max_body_bytes: config.server.max_body_bytes,
            relay: relay_status,
            metrics: metrics.clone(),
            body_timeouts: config.server.body_timeouts,
            clock: clock.clone(),
            signing_key,
            previous_keys: config.audit.previous_public_keys.clone(),
            staff_auth: config.staff.as_ref().map(|s| s.auth.clone()),
            refusals: refusals.clone(),
            reports: Arc::new(tokio::sync::Semaphore::new(
                api::reports::CONCURRENT_REPORTS,
            )),
        });

        let listener = TcpListener::bind(config.server.listen)
            .with_context(|| format!("binding the agency listener to {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        let app_state = state.clone();
        let server = tls_server(
            TlsListener {
                name: "agency",
                listener,
                tls: agency_tls.config,
                workers: config.server.workers,
                shutdown_timeout_secs: config.server.shutdown_timeout_secs,
                identify: Some(runtime),
            },
            metrics.clone(),
            move || {
                App::new()
                    .app_data(app_state.clone())
                    .app_data(api::problem::query_config())
                    .wrap(middleware::from_fn(
                        api::middleware::correlation::middleware,
                    ))
                    .wrap(middleware::from_fn(count_requests))
                    .wrap(middleware::from_fn(
                        api::middleware::body::drain_unread_body,
                    ))
                    .wrap(response_headers(false))
                    .configure(api::agency_routes)
                    .default_service(web::to(api::problem::no_such_route))
            },
        )
        .context("starting the agency listener")?;

        let (ops_server, ops_addr) = match config.server.ops_listen {
            None => (None, None),
            Some(ops) => {
                let listener = TcpListener::bind(ops)
                    .with_context(|| format!("binding the ops listener to {ops}"))?;
                let ops_addr = listener.local_addr()?;
                let ops_state = state.clone();
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(ops_state.clone())
                        .wrap(middleware::from_fn(
                            api::middleware::correlation::middleware,
                        ))
                        .wrap(middleware::from_fn(
                            api::middleware::body::drain_unread_body,
                        ))
                        .configure(api::ops_routes)
                        .default_service(web::to(api::problem::no_such_route))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(config.server.shutdown_timeout_secs)
                .listen(listener)
                .context("starting the ops listener")?
                .run();
                (Some(server), Some(ops_addr))
            }
        };
        let (staff_server, staff_addr) = match config.staff.as_ref().and_then(|s| s.listen) {
            None => (None, None),
            Some(staff) => {
                let tls_config = checked
                    .staff_tls
                    .clone()
                    .context("building the staff listener's TLS configuration")?;
                let listener = TcpListener::bind(staff)
                    .with_context(|| format!("binding the staff listener to {staff}"))?;
                let staff_addr = listener.local_addr()?;
                let staff_state = state.clone();
                let console = api::console::ConsoleState::from_config(&config)
                    .context("[console]")?
                    .map(web::Data::new);
                let console_routes =
                    api::console::configure(config.staff.as_ref().is_some_and(|s| s.dev_tokens));
                let server = tls_server(
                    TlsListener {
                        name: "staff",
                        listener,
                        tls: tls_config,
                        workers: Some(2),
                        shutdown_timeout_secs: config.server.shutdown_timeout_secs,
                        identify: None,
                    },
                    metrics.clone(),
                    move || {
                        App::new()
                            .app_data(staff_state.clone())
                            .app_data(api::problem::query_config())
                            .wrap(middleware::from_fn(
                                api::middleware::correlation::middleware,
                            ))
                            .wrap(middleware::from_fn(count_requests))
                            .wrap(middleware::from_fn(
                                api::middleware::body::drain_unread_body,
                            ))
                            .wrap(response_headers(true))
                            .configure(api::staff_routes)
                            .configure(|cfg| {
                                if let Some(console) = &console {
                                    cfg.app_data(console.clone());
                                    console_routes(cfg);
                                }
                            })
                            .default_service(web::to(api::problem::no_such_route))
                    },
                )
                .context("starting the staff listener")?;
                (Some(server), Some(staff_addr))
            }
        };
        // Every listener is bound: start the workers (none is left running if a bind fails).
        let mut workers = Vec::new();
        if let Some(scanner) = scanner {
            workers.push(Worker::spawn("SLA scanner", |stop| scanner.run(stop)));
        }
        if let Some(relay) = relay {
            workers.push(Worker::spawn("relay", |stop| relay.run(stop)));
        }
        // Before the committer, so that its last tally is written.
        let recorder = api::refusals::TallyRecorder {
            tally: refusals.clone(),
            store: store.clone(),
            clock: clock.clone(),
        };
        workers.push(Worker::spawn("refusal tally", |stop| recorder.run(stop)));
        // Stopped after the listeners (whose requests wait for it) and before the
        // checkpointer (whose last checkpoint then covers every batch).
        workers.push(Worker::spawn("committer", |stop| committer.run(stop)));
        workers.push(Worker::spawn("audit checkpointer", |stop| {
            checkpointer.run(stop)
        }));
        if let Some(refresher) = jwks_refresher {
            workers.push(Worker::spawn("staff key refresher", |stop| {
                refresher.run(stop)
            }));
        }
        tracing::info!(%addr, ops = ?ops_addr, staff = ?staff_addr, backend = ?store.backend(), "gateway listening");
        Ok(Self {
            addr,
            ops_addr,
            staff_addr,
            servers: std::iter::once(server)
                .chain(ops_server)
                .chain(staff_server)
                .collect(),
            store,
            reloader,
            workers,
            refusals,
        })
    }

    /// What reloads the configuration (`None` when built without a source).
    pub fn reloader(&self) -> Option<Arc<Reloader>> {
        self.reloader.clone()
    }

    /// The bound agency (mTLS) address; with port 0 in the config, the port chosen.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_addr
    }

    /// The staff (bearer token) listener's address, when `[staff] listen` is set.
    pub fn staff_addr(&self) -> Option<SocketAddr> {
        self.staff_addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The tally of unverified refusals (written to the audit log once a minute).
    pub fn refusals(&self) -> Arc<api::refusals::RefusalTally> {
        self.refusals.clone()
    }

    /// Handles to stop the servers gracefully (what SIGTERM/SIGINT also do).
    pub fn handles(&self) -> Vec<ServerHandle> {
        self.servers.iter().map(Server::handle).collect()
    }

    /// Runs until a handle's stop. In-flight requests finish first, then the relay
    /// finishes its batch, then the database pool closes.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let store = self.store.clone();
        let result = futures_util::future::try_join_all(self.servers)
            .await
            .map(|_| ());
        // In order: the scanner first, since what it flags goes out through the relay.
        for worker in self.workers {
            worker.stop(WORKER_STOP_TIMEOUT).await;
        }
        store.close().await;
        tracing::info!("gateway stopped");
        result
    }

    /// Like `run_until_stopped`, and SIGTERM or SIGINT stop the gateway gracefully;
    /// SIGHUP reloads the configuration.
    pub async fn run_until_signalled(self) -> std::io::Result<()> {
        if let Some(reloader) = self.reloader() {
            reload::reload_on_sighup(reloader);
        }
        let handles = self.handles();
        tokio::spawn(async move {
            wait_for_stop_signal().await;
            tracing::info!("stop signal received; finishing in-flight requests");
            for handle in handles {
                handle.stop(true).await;
            }
        });
        self.run_until_stopped().await
    }
}

/// Counts every answer by route pattern (bounded cardinality), method and status.
async fn count_requests(
    req: actix_web::dev::ServiceRequest,
    next: middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method = crate::metrics::method_label(req.method());
    let result = next.call(req).await;
    if let Some(metrics) = metrics {
        // The pattern is known only once the router has run.
        let (route, status) = match &result {
            Ok(res) => (res.request().match_pattern(), res.status().as_u16()),
            Err(e) => (None, e.as_response_error().status_code().as_u16()),
        };
        let route = route.unwrap_or_else(|| "unmatched".to_owned());
        metrics
            .http_requests
            .get_or_create(&HttpLabels {
                route,
                method,
                status,
            })
            .inc();
    }
    result
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A TLS listener assembled from actix's parts.
struct TlsListener {
    /// `agency` or `staff`: the `listener` label of refused handshakes.
    name: &'static str,
    listener: TcpListener,
    tls: rustls::ServerConfig,
    workers: Option<usize>,
    shutdown_timeout_secs: u64,
    /// The agency listener: what each verified client certificate presents is recorded
    /// with its connection (and one registered to no agency is reported).
    identify: Option<Arc<RuntimeCell>>,
}

/// A TLS listener (agency or staff): what `HttpServer::listen_rustls_0_23` builds, from
/// its parts, with each connection run inside `handshake::observe` so that a refused
/// client is logged with its address and counted (`refgw_tls_handshake_failures_total`).
fn tls_server<F, I, S, B>(
    tls: TlsListener,
    metrics: Arc<Metrics>,
    app: F,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: actix_web::dev::ServiceFactory<
            actix_http::Request,
            Config = actix_web::dev::AppConfig,
            InitError = (),
        > + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::Response: Into<actix_http::Response<B>> + 'static,
    <S::Service as actix_web::dev::Service<actix_http::Request>>::Future: 'static,
    S::Service: 'static,
    B: actix_web::body::MessageBody + 'static,
{
    use actix_service::{ServiceFactoryExt, map_config};
    use actix_web::dev::{AppConfig, Service, ServiceFactory, fn_factory, fn_service};

    let TlsListener {
        name,
        listener,
        tls: tls_config,
        workers,
        shutdown_timeout_secs,
        identify,
    } = tls;
    let addr = listener.local_addr()?;
    let mut builder = Server::build()
        .disable_signals()
        .shutdown_timeout(shutdown_timeout_secs)
        .max_concurrent_connections(MAX_CONNECTIONS_PER_WORKER);
    if let Some(workers) = workers {
        builder = builder.workers(workers);
    }
    let shutdown = builder.graceful_shutdown_signal();
    builder
        .listen(name, listener, move || {
            let shutdown = shutdown.clone();
            let identify = identify.clone();
            let metrics = metrics.clone();
            let app = app().into_factory().map_err(|e| e.into().error_response());
            // Every phase of a connection bounded, as `HttpServer` sets them (building the
            // service by hand starts from actix-http's defaults, whose disconnect timeout
            // is none): an idle keep-alive connection 5 s, a request's head 5 s, and the
            // closing flush to a client that stopped reading 1 s.
            let http = actix_http::HttpService::build()
                .keep_alive(std::time::Duration::from_secs(5))
                .client_request_timeout(std::time::Duration::from_secs(5))
                .client_disconnect_timeout(std::time::Duration::from_secs(1))
                .graceful_shutdown_signal(move || {
                    let signal = shutdown.clone();
                    async move { signal.notified().await }
                })
                .on_connect_ext({
                    let metrics = metrics.clone();
                    move |io: &TlsStream<TcpStream>, ext: &mut Extensions| {
                        if let Some(runtime) = &identify {
                            identify_peer(&runtime.load().registry, &metrics, io, ext);
                        }
                    }
                })
                .finish(map_config(app, move |_| {
                    // As HttpServer does: host and address for URL generation.
                    AppConfig::__priv_test_new(true, addr.to_string(), addr)
                }))
                .rustls_0_23(tls_config.clone());
            fn_factory(move || {
                let created = http.new_service(());
                let metrics = metrics.clone();
                async move {
                    let service = std::rc::Rc::new(created.await?);
                    Ok::<_, ()>(fn_service(move |tcp: TcpStream| {
                        let service = service.clone();
                        let metrics = metrics.clone();
                        async move {
                            let peer = tcp.peer_addr().ok();
                            let (result, refusal) = handshake::observe(service.call(tcp)).await;
                            if let Err(error) = &result
                                && let Some((reason, fingerprint)) =
                                    handshake::classify(error, refusal)
                            {
                                handshake::report(
                                    &metrics,
                                    name,
                                    peer,
                                    reason,
                                    fingerprint.as_ref(),
                                );
                            }
                            Ok::<(), ()>(())
                        }
                    }))
                }
            })
        })
        .map(|builder| builder.run())
}

/// Headers on every answer of the two TLS listeners, unless a handler set its own (the
/// console sets the same and more): answers hold referrals, timelines and audit entries,
/// so no cache keeps them; no content sniffing; and on the staff listener, which browsers
/// use, HTTPS only (HSTS).
fn response_headers(browsers: bool) -> middleware::DefaultHeaders {
    let headers = middleware::DefaultHeaders::new()
        .add((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .add((actix_web::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if browsers {
        headers.add((
            actix_web::http::header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000",
        ))
    } else {
        headers
    }
}

/// Connections each worker of a TLS listener holds at most; beyond it, new ones wait in
/// the listen backlog (three listeners of two workers stay well under the file limit,
/// `LimitNOFILE=65536` in deploy/referral-gateway.service).
const MAX_CONNECTIONS_PER_WORKER: usize = 4096;

/// Each registered agency's latest certificate expiry in `dir` (tls.issued_dir), leaving
/// out certificates the CRLs `crls` (tls.crls) revoke.
pub(crate) fn certificate_expiries(
    dir: &std::path::Path,
    registry: &AgencyRegistry,
    crls: &[std::path::PathBuf],
) -> anyhow::Result<Vec<(String, i64)>> {
    let revoked = crate::security::certs::revoked_serials(crls).context("tls.crls")?;
    let mut latest: std::collections::BTreeMap<String, i64> = Default::default();
    for (agency, cert) in crate::security::certs::issued_certificates(dir, registry, &revoked)
        .context("tls.issued_dir")?
    {
        let not_after = cert.not_after.unix_timestamp();
        let entry = latest.entry(agency).or_insert(not_after);
        *entry = (*entry).max(not_after);
    }
    Ok(latest.into_iter().collect())
}

/// Runs once per TLS connection, after the handshake verified the client certificate.
fn identify_peer(
    registry: &AgencyRegistry,
    metrics: &Metrics,
    stream: &TlsStream<TcpStream>,
    ext: &mut Extensions,
) {
    let (tcp, session) = stream.get_ref();
    // The leaf is the first certificate of the chain the client sent.
    let Some(leaf) = session.peer_certificates().and_then(|chain| chain.first()) else {
        return;
    };
    let presented = crate::security::tls::presented_identity(leaf.as_ref());
    let fingerprint = crate::security::digest::fingerprint_hex(&presented.sha256);
    if registry.identify(&presented).is_none() {
        // Signed by the scheme CA, but registered to no agency: every request gets 403.
        crate::security::handshake::report(
            metrics,
            "agency",
            tcp.peer_addr().ok(),
            crate::security::handshake::FailureReason::UnknownAgency,
            Some(&presented.sha256),
        );
    }
    ext.insert(PeerCertificate {
        presented,
        fingerprint,
    });
}

/// On PostgreSQL, the gateway's own role should only read and append to the audit
/// tables: an owner (or superuser) can switch off their triggers and rewrite them.
async fn warn_about_audit_powers(store: &Store) {
    match store.audit_protection().await {
        Ok(problems) if problems.is_empty() => {}
        Ok(problems) => tracing::warn!(
            problems = %problems.join("; "),
            "this database role can alter the audit log (it owns the audit tables, is a superuser or holds UPDATE, DELETE, TRUNCATE or TRIGGER on them): run `referral-gateway migrate --grant-to <runtime role>` as an owner role and serve as the runtime role (docs/governance.md)"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the database role's privileges on the audit tables")
        }
    }
}

/// What is allowed but probably not meant: service types without an overlay schema,
/// agreements and permissions whose areas reach beyond their recipients. Logged at
/// start-up and printed by `referral-gateway config check`; ids only, never data.
pub fn configuration_warnings(config: &Config, schemas: &SchemaRegistry) -> Vec<String> {
    let overlays: Vec<&str> = schemas.overlay_service_types().collect();
    let mut warnings: Vec<String> = config
        .registry
        .agencies()
        .filter(|a| a.role.receives() && !overlays.contains(&a.service_type.as_str()))
        .map(|a| {
            format!(
                "agency '{}': no schema overlay for service type '{}'; referrals to it are checked against the common schema only",
                a.id, a.service_type
            )
        })
        .collect();
    warnings.extend(crate::domain::sharing::wording_warnings(
        &config.sharing_agreements,
        &config.registry,
    ));
    warnings.extend(config.registry.permission_warnings());
    let staff_listener = config.staff.as_ref().and_then(|s| s.listen).is_some();
    if config.console.oidc.is_some() && !staff_listener {
        warnings.push(
            "console: OpenID Connect sign-in is configured, but the console is served on the staff listener, which is off ([staff] listen): nobody can sign in".to_owned(),
        );
    }
    warnings
}
