//! Helpers shared by the integration tests: a gateway on port 0 over real mTLS, backed by
//! a throw-away SQLite file or a uniquely named PostgreSQL database that is dropped
//! afterwards.

pub mod cli;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use referral_gateway::config::{Config, Env};
use referral_gateway::startup::Application;
use referral_gateway::store::Store;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The shipped config's four service types, each with the Coventry agency that receives
/// it (and an example referral in docs/examples/).
pub const SERVICE_TYPES: [(&str, &str); 4] = [
    ("cmht", "coventry-cmht"),
    ("iapt", "coventry-iapt"),
    ("housing", "coventry-housing"),
    ("substance_misuse", "coventry-substance-misuse"),
];

pub fn root() -> &'static Path {
    Path::new(ROOT)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where PostgreSQL tests create their databases (trust auth on the test machines).
pub fn postgres_admin_url() -> String {
    std::env::var("REFGW_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("gateway.db").display());
                Self {
                    url,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let name = format!("refgw_test_{}", uuid::Uuid::new_v4().simple());
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL must be running on 127.0.0.1:5432 (see README)");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let (base, _) = admin.rsplit_once('/').expect("admin url has a database");
                Self {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl TestDatabase {
    /// The same database, for a second gateway: dropping this handle drops nothing.
    pub fn share(&self) -> Self {
        Self {
            url: self.url.clone(),
            _dir: None,
            pg_name: None,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            as_postgres_admin(vec![format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")]);
        }
    }
}

/// Runs `statements` as the PostgreSQL administrator, ignoring failures: cleaning up after
/// a test, even one that panicked (on a thread of its own, with its own runtime).
fn as_postgres_admin(statements: Vec<String>) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                for sql in statements {
                    let _ = sqlx::query(&sql).execute(&mut conn).await;
                }
            }
        });
    })
    .join();
}

/// Two PostgreSQL roles for one test database, as in production: `owner` owns the
/// database (and so the tables `migrate` creates); `runtime` is what `serve` logs in as.
/// Dropped (with the database) afterwards.
pub struct PgRoles {
    pub owner: String,
    pub runtime: String,
    pub owner_url: String,
    pub runtime_url: String,
    database: String,
}

impl PgRoles {
    pub async fn create(db: &TestDatabase) -> Self {
        use sqlx::Connection;
        let database = db.pg_name.clone().expect("a PostgreSQL test database");
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
        let (owner, runtime) = (
            format!("refgw_owner_{suffix}"),
            format!("refgw_app_{suffix}"),
        );
        let admin = postgres_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL must be running on 127.0.0.1:5432 (see README)");
        for sql in [
            format!("CREATE ROLE {owner} LOGIN"),
            format!("CREATE ROLE {runtime} LOGIN"),
            format!("ALTER DATABASE {database} OWNER TO {owner}"),
        ] {
            sqlx::query(&sql).execute(&mut conn).await.expect(&sql);
        }
        // postgres://postgres@host:port/db -> postgres://<role>@host:port/<database>
        let (scheme, rest) = admin.split_once("://").expect("admin url");
        let host = rest.split_once('@').map_or(rest, |(_, h)| h);
        let (host, _) = host.rsplit_once('/').expect("admin url has a database");
        let url = |role: &str| format!("{scheme}://{role}@{host}/{database}");
        Self {
            owner_url: url(&owner),
            runtime_url: url(&runtime),
            owner,
            runtime,
            database,
        }
    }
}

impl Drop for PgRoles {
    fn drop(&mut self) {
        let (database, owner, runtime) = (&self.database, &self.owner, &self.runtime);
        as_postgres_admin(vec![
            format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
            format!("DROP ROLE IF EXISTS {runtime}"),
            format!("DROP ROLE IF EXISTS {owner}"),
        ]);
    }
}

/// Environment overrides for a test gateway.
pub struct TestEnv(pub Vec<(String, String)>);

impl Env for TestEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// The shipped config, with absolute paths so tests do not depend on the working directory.
pub fn shipped_config_text() -> String {
    let text = std::fs::read_to_string(root().join("config/gateway.toml")).expect("config");
    text.replace("\"certs-example/", &format!("\"{ROOT}/certs-example/"))
        .replace("\"config/", &format!("\"{ROOT}/config/"))
        .replace("dir = \"schemas\"", &format!("dir = \"{ROOT}/schemas\""))
}

pub fn test_config(text: &str, database_url: &str) -> Config {
    let mut config = Config::from_toml(text, Path::new("test.toml"), &test_env(database_url))
        .expect("test config is valid");
    adjust_for_test(&mut config);
    config
}

/// The environment of a test gateway: port 0 for every listener, its own database.
pub fn test_env(database_url: &str) -> TestEnv {
    TestEnv(vec![
        ("REFGW_LISTEN".into(), "127.0.0.1:0".into()),
        ("REFGW_OPS_LISTEN".into(), "127.0.0.1:0".into()),
        ("REFGW_STAFF_LISTEN".into(), "127.0.0.1:0".into()),
        ("REFGW_DATABASE_URL".into(), database_url.into()),
    ])
}

/// What every test gateway's configuration gets after loading.
pub fn adjust_for_test(config: &mut Config) {
    config.server.workers = Some(1);
    config.server.shutdown_timeout_secs = 1;
    config.database.max_connections = 5;
    // Tests that deliver turn the relay on with their own broker namespace.
    config.relay.enabled = false;
    // Tests that exercise SLA clocks run scans themselves, with a clock they move.
    config.sla.scanner_enabled = false;
}

/// The same, delivering to RabbitMQ (at `amqp_url`) under `namespace`.
pub fn delivering_config(
    text: &str,
    database_url: &str,
    amqp_url: &str,
    namespace: &str,
) -> Config {
    let mut config = test_config(text, database_url);
    adjust_for_delivery(&mut config, amqp_url, namespace);
    config
}

/// Turns the relay on, delivering to `amqp_url` under `namespace`.
pub fn adjust_for_delivery(config: &mut Config, amqp_url: &str, namespace: &str) {
    config.relay.enabled = true;
    config.relay.max_backoff = std::time::Duration::from_secs(1);
    config.relay.poll_interval = std::time::Duration::from_millis(100);
    config.amqp.url = amqp_url.to_owned();
    config.amqp.namespace = namespace.to_owned();
}

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn unique_namespace() -> String {
    format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub struct TestApp {
    pub base: String,
    pub ops_base: String,
    /// The staff (bearer token) listener, when the config has `[staff]`.
    pub staff_base: Option<String>,
    pub store: Store,
    handles: Vec<actix_web::dev::ServerHandle>,
    running: tokio::task::JoinHandle<std::io::Result<()>>,
    pub db: TestDatabase,
    /// Reloads the configuration (a gateway started with `start_reloadable`).
    pub reloader: Option<Arc<referral_gateway::reload::Reloader>>,
    refusals: Arc<referral_gateway::api::refusals::RefusalTally>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, &shipped_config_text()).await
    }

    pub async fn spawn_with(backend: Backend, config_text: &str) -> Self {
        let db = TestDatabase::create(backend).await;
        let config = test_config(config_text, &db.url);
        Self::start(config, db).await
    }

    /// A gateway whose relay delivers to RabbitMQ at `amqp_url` under `namespace`.
    pub async fn spawn_delivering(backend: Backend, amqp_url: &str, namespace: &str) -> Self {
        let db = TestDatabase::create(backend).await;
        let config = delivering_config(&shipped_config_text(), &db.url, amqp_url, namespace);
        Self::start(config, db).await
    }

    pub async fn start(config: Config, db: TestDatabase) -> Self {
        Self::start_with_clock(config, db, Arc::new(referral_gateway::clock::SystemClock)).await
    }

    pub async fn start_with_clock(
        config: Config,
        db: TestDatabase,
        clock: Arc<dyn referral_gateway::clock::TimeSource>,
    ) -> Self {
        Self::start_from(config, db, clock, None).await
    }

    /// A gateway whose [`TestApp::reloader`] re-reads its configuration from `source`.
    pub async fn start_reloadable(
        config: Config,
        db: TestDatabase,
        source: Box<dyn referral_gateway::reload::ConfigSource>,
    ) -> Self {
        Self::start_from(
            config,
            db,
            Arc::new(referral_gateway::clock::SystemClock),
            Some(source),
        )
        .await
    }

    async fn start_from(
        config: Config,
        db: TestDatabase,
        clock: Arc<dyn referral_gateway::clock::TimeSource>,
        source: Option<Box<dyn referral_gateway::reload::ConfigSource>>,
    ) -> Self {
        init_logs();
        let app = Application::build_reloadable(config, clock, source)
            .await
            .expect("gateway starts");
        let reloader = app.reloader();
        let base = format!("https://localhost:{}", app.addr().port());
        let ops_base = format!(
            "http://127.0.0.1:{}",
            app.ops_addr().expect("ops listener").port()
        );
        let staff_base = app
            .staff_addr()
            .map(|a| format!("https://localhost:{}", a.port()));
        let store = app.store().clone();
        let refusals = app.refusals();
        let handles = app.handles();
        let running = tokio::spawn(app.run_until_stopped());
        Self {
            base,
            ops_base,
            staff_base,
            store,
            handles,
            running,
            db,
            reloader,
            refusals,
        }
    }

    /// Writes the tally of unverified refusals to the audit log now (the gateway does it
    /// once a minute and when it stops).
    pub async fn record_refusals(&self) {
        self.refusals
            .record(&self.store, time::OffsetDateTime::now_utc())
            .await
            .expect("the tally is written");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A URL on the staff listener.
    pub fn staff_url(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.staff_base
                .as_deref()
                .expect("staff listener configured")
        )
    }

    /// Stops the servers and waits, so the database can be dropped cleanly.
    pub async fn stop(self) {
        for h in &self.handles {
            h.stop(true).await;
        }
        self.store.close().await;
    }

    /// Stops the servers and waits for the workers to finish (the audit checkpointer signs
    /// its last checkpoint), keeping the database for the test to inspect.
    pub async fn shutdown(self) -> TestDatabase {
        for h in &self.handles {
            h.stop(true).await;
        }
        let _ = self.running.await;
        self.db
    }

    pub async fn count(&self, sql: &'static str, referral_id: &str) -> i64 {
        use sqlx::Row;
        sqlx::query(sql)
            .bind(referral_id.to_owned())
            .fetch_one(self.store.pool())
            .await
            .expect("count query")
            .try_get::<i64, _>(0)
            .expect("count")
    }

    /// `POST /v1/referrals` as `agency`: asserts `status` and returns the JSON body (the
    /// receipt, or a problem document checked as `problem` does).
    pub async fn submit_as(
        &self,
        agency: &str,
        body: impl Into<reqwest::Body>,
        status: u16,
    ) -> Value {
        expect_json(
            post_referral(&agency_client(agency), self, body).await,
            status,
        )
        .await
    }

    /// Submits a referral as the Coventry liaison team; returns its id (asserting 202).
    pub async fn submit(&self, body: impl Into<reqwest::Body>) -> String {
        self.submit_as("coventry-liaison", body, 202).await["referral_id"]
            .as_str()
            .expect("referral id")
            .to_owned()
    }

    /// Posts a lifecycle event as `agency`: asserts `status`, returns the JSON body.
    pub async fn post_event_as(&self, agency: &str, id: &str, event: &Value, status: u16) -> Value {
        expect_json(post_event(self, agency, id, event).await, status).await
    }

    /// `GET /v1/referrals/{id}` as `agency`: asserts `status`, returns the JSON body.
    pub async fn view_as(&self, agency: &str, id: &str, status: u16) -> Value {
        self.get_as(agency, &format!("/v1/referrals/{id}"), status)
            .await
    }

    /// `GET path` on the agency listener as `agency`: asserts `status`, returns the JSON
    /// body.
    pub async fn get_as(&self, agency: &str, path: &str, status: u16) -> Value {
        let response = agency_client(agency)
            .get(self.url(path))
            .send()
            .await
            .expect("request reaches the gateway");
        expect_json(response, status).await
    }

    /// `GET path` on the staff listener with a bearer `token`: asserts `status`, returns
    /// the JSON body.
    pub async fn staff_get(&self, path: &str, token: &str, status: u16) -> Value {
        expect_json(staff_response(self, path, Some(token)).await, status).await
    }

    /// The text the ops listener answers `GET path` with.
    pub async fn ops_text(&self, path: &str) -> String {
        let response = staff_client()
            .get(format!("{}{path}", self.ops_base))
            .send()
            .await;
        response.unwrap().text().await.unwrap()
    }

    /// The JSON document the ops listener answers `GET path` with.
    pub async fn ops_get(&self, path: &str) -> Value {
        serde_json::from_str(&self.ops_text(path).await).unwrap()
    }

    /// How many audit entries record `action`.
    pub async fn count_action(&self, action: &str) -> i64 {
        self.count("SELECT COUNT(*) FROM audit_log WHERE action = $1", action)
            .await
    }

    /// The newest audit entry's action and detail.
    pub async fn last_audit(&self) -> (String, String) {
        use sqlx::Row;
        let row = sqlx::query("SELECT action, detail FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_one(self.store.pool())
            .await
            .unwrap();
        (row.get("action"), row.get("detail"))
    }

    /// Waits until the relay has published every outbox row (failing after `timeout`).
    pub async fn wait_until_drained(&self, timeout: std::time::Duration) {
        let started = std::time::Instant::now();
        loop {
            let backlog = self.store.outbox_backlog().await.unwrap();
            if backlog.pending == 0 {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "outbox not drained: {backlog:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn roots(ca: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(cert.expect("ca pem")).expect("ca cert");
    }
    roots
}

/// A rustls client config trusting `ca`, presenting `identity` = (cert, key) when given.
pub fn client_tls(
    ca: &Path,
    identity: Option<(PathBuf, PathBuf)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots(ca));
    match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(&cert)
                .expect("client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert pem");
            let key = PrivateKeyDer::from_pem_file(&key).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    }
}

pub fn http_client(tls: rustls::ClientConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .expect("reqwest client")
}

/// A client holding the example certificate of `agency` (e.g. `coventry-liaison`).
pub fn agency_client(agency: &str) -> reqwest::Client {
    let dir = root().join("certs-example/agencies");
    http_client(client_tls(
        &root().join("certs-example/ca.crt"),
        Some((
            dir.join(format!("{agency}.crt")),
            dir.join(format!("{agency}.key")),
        )),
        rustls::ALL_VERSIONS,
    ))
}

/// A TLS client without a client certificate (as staff tools are), trusting the dev CA;
/// it reads the plain-HTTP ops listener too.
pub fn staff_client() -> reqwest::Client {
    http_client(client_tls(
        &root().join("certs-example/ca.crt"),
        None,
        rustls::ALL_VERSIONS,
    ))
}

/// A development staff token (as `referral-gateway dev-token` mints it) for `subject`
/// with `roles` (and `agency`), accepted by a gateway configured by `config_text`.
pub fn dev_token(
    config_text: &str,
    subject: &str,
    roles: &[referral_gateway::staff_auth::tokens::Role],
    agency: Option<&str>,
) -> String {
    let staff = test_config(config_text, "sqlite::memory:")
        .staff
        .expect("[staff] configured");
    referral_gateway::staff_auth::tokens::mint_dev_token(
        &staff.dev_signing_key,
        staff.auth.policy(),
        &referral_gateway::staff_auth::tokens::DevTokenRequest {
            subject,
            roles,
            agency,
            lifetime: time::Duration::minutes(5),
        },
    )
    .expect("development token")
}

/// A fresh P-256 key and its public JWK under `kid`, as an identity provider publishes it.
pub fn es256_key(kid: &str) -> (jsonwebtoken::EncodingKey, Value) {
    use jsonwebtoken::{Algorithm, EncodingKey, jwk::Jwk};
    let pair = rcgen::KeyPair::generate().expect("P-256 key");
    let key = EncodingKey::from_ec_der(&pair.serialize_der());
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("JWK");
    jwk.common.key_id = Some(kid.into());
    (key, serde_json::to_value(&jwk).expect("JWK JSON"))
}

/// A JWT over `claims`, ES256 with `kid` in its header.
pub fn sign_es256(key: &jsonwebtoken::EncodingKey, kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).expect("JWT")
}

/// A loopback listener on a free port and the development server certificate's TLS
/// config: where a stand-in identity provider serves HTTPS (`serve_https!`).
pub fn dev_https_listener() -> (std::net::TcpListener, rustls::ServerConfig) {
    let config = test_config(&shipped_config_text(), "sqlite::memory:");
    let tls = referral_gateway::security::tls::staff_server_config(&config.tls)
        .expect("development server certificate");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    (listener, tls)
}

/// A client holding the "unregistered" example certificate: signed by the scheme CA but
/// in no agency's registration (tests register it as a team of their own).
pub fn unregistered_client() -> reqwest::Client {
    let dir = root().join("certs-example/unregistered");
    http_client(client_tls(
        &root().join("certs-example/ca.crt"),
        Some((dir.join("client.crt"), dir.join("client.key"))),
        rustls::ALL_VERSIONS,
    ))
}

/// The SHA-256 fingerprint (as the config's `certificate = { sha256 = ... }` takes it) of
/// the "unregistered" example certificate.
pub fn unregistered_pin() -> String {
    let cert = CertificateDer::from_pem_file(root().join("certs-example/unregistered/client.crt"))
        .expect("unregistered example certificate");
    referral_gateway::security::digest::fingerprint_hex(
        &referral_gateway::security::digest::sha256(cert.as_ref()),
    )
}

/// The development audit signing key (certs-example/gateway-signing.key).
pub fn signing_key() -> Arc<referral_gateway::security::signing::GatewayKey> {
    Arc::new(
        referral_gateway::security::signing::GatewayKey::load(
            &root().join("certs-example/gateway-signing.key"),
        )
        .expect("development signing key"),
    )
}

pub fn example_text(service_type: &str) -> String {
    std::fs::read_to_string(
        root()
            .join("docs/examples")
            .join(format!("referral-{service_type}.json")),
    )
    .expect("example referral")
}

pub fn example(service_type: &str) -> Value {
    serde_json::from_str(&example_text(service_type)).expect("example is JSON")
}

pub async fn post_referral(
    client: &reqwest::Client,
    app: &TestApp,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client
        .post(app.url("/v1/referrals"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request reaches the gateway")
}

/// JSON Pointers listed in a problem+json `errors` array.
pub fn pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["pointer"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().is_some_and(|t| !t.is_empty()));
    body
}

/// The JSON body of `response`, asserting its status; for a problem status (400 and up)
/// checked as `problem` does.
pub async fn expect_json(response: reqwest::Response, status: u16) -> Value {
    if status >= 400 {
        return problem(response, status).await;
    }
    let got = response.status().as_u16();
    if got != status {
        let url = response.url().clone();
        let text = response.text().await.unwrap_or_default();
        panic!("{url}: expected {status}, got {got}: {text}");
    }
    response.json().await.expect("JSON body")
}

/// `GET path` on the staff listener, with a bearer `token` when given: the raw response.
pub async fn staff_response(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = staff_client().get(app.staff_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request reaches the gateway")
}

/// A direct connection to the test broker, for declaring, reading and deleting a test
/// namespace's queues.
pub struct Broker {
    pub topology: referral_gateway::delivery::topology::Topology,
    connection: lapin::Connection,
    pub channel: lapin::Channel,
    cleaned: bool,
}

impl Broker {
    pub async fn new(namespace: &str) -> Self {
        let config = test_config(&shipped_config_text(), "sqlite::memory:");
        let topology =
            referral_gateway::delivery::topology::Topology::new(namespace, &config.registry);
        let (connection, channel) =
            referral_gateway::delivery::topology::connect_confirming(AMQP_URL)
                .await
                .expect("RabbitMQ must be running on 127.0.0.1:5672 (see README)");
        topology.declare(&channel).await.expect("declare topology");
        Self {
            topology,
            connection,
            channel,
            cleaned: false,
        }
    }

    /// Takes (and acks) messages from `queue` until `expected` have arrived and the queue
    /// stays empty for a moment, or until `timeout`. Returns everything taken, so a test
    /// can count duplicates.
    pub async fn take(
        &self,
        queue: &str,
        expected: usize,
        timeout: std::time::Duration,
    ) -> Vec<lapin::message::Delivery> {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        let started = std::time::Instant::now();
        let mut taken = Vec::new();
        let mut quiet_since: Option<std::time::Instant> = None;
        loop {
            let got = self
                .channel
                .basic_get(queue.into(), BasicGetOptions::default())
                .await
                .expect("basic.get");
            match got {
                Some(message) => {
                    quiet_since = None;
                    message
                        .delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .expect("ack");
                    taken.push(message.delivery);
                }
                None => {
                    let now = std::time::Instant::now();
                    if taken.len() >= expected {
                        let quiet = *quiet_since.get_or_insert(now);
                        if now.duration_since(quiet) > std::time::Duration::from_millis(300) {
                            return taken;
                        }
                    }
                    if started.elapsed() > timeout {
                        return taken;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    }

    pub async fn cleanup(mut self) {
        let _ = self.topology.delete(&self.channel).await;
        let _ = self.connection.close(200, "test done".into()).await;
        self.cleaned = true;
    }
}

impl Drop for Broker {
    /// A failed test still removes its namespace (on a thread with its own runtime).
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let topology = self.topology.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((connection, channel)) =
                    referral_gateway::delivery::topology::connect_confirming(AMQP_URL).await
                {
                    let _ = topology.delete(&channel).await;
                    let _ = connection.close(200, "test cleanup".into()).await;
                }
            });
        })
        .join();
    }
}

/// A TCP proxy in front of RabbitMQ that a test can cut and restore.
pub struct CuttableProxy {
    pub port: u16,
    up: tokio::sync::watch::Sender<bool>,
}

impl CuttableProxy {
    pub async fn start(target: &str, up: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = tokio::sync::watch::channel(up);
        let target = target.to_owned();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut state = rx.clone();
                if !*state.borrow() {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { port, up: tx }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn set_up(&self, up: bool) {
        let _ = self.up.send(up);
    }
}

pub fn header(delivery: &lapin::message::Delivery, name: &str) -> Option<String> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
        .and_then(|v| match v {
            lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
            _ => None,
        })
}

/// Posts a lifecycle event as `agency`: the raw response.
pub async fn post_event(app: &TestApp, agency: &str, id: &str, event: &Value) -> reqwest::Response {
    agency_client(agency)
        .post(app.url(&format!("/v1/referrals/{id}/events")))
        .header("content-type", "application/json")
        .body(event.to_string())
        .send()
        .await
        .expect("request reaches the gateway")
}

/// An event of `kind` with a fresh event id and `extra` fields.
pub fn event(kind: &str, extra: Value) -> Value {
    let mut e = serde_json::json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": kind});
    if let (Some(e), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
        e.extend(extra.clone());
    }
    e
}

/// Serves the actix app factory `$factory` over HTTPS on `$listener` with `$tls` (from
/// `dev_https_listener`), one worker, on the test's runtime; evaluates to its
/// `ServerHandle`. A macro because `HttpServer::new`'s bounds name actix's inner crates.
macro_rules! serve_https {
    ($listener:expr, $tls:expr, $factory:expr) => {{
        let server = actix_web::HttpServer::new($factory)
            .workers(1)
            .disable_signals()
            .listen_rustls_0_23($listener, $tls)
            .expect("listen")
            .run();
        let handle = server.handle();
        tokio::spawn(server);
        handle
    }};
}

/// Runs the async test function `$test(backend)` against both databases, as the tests
/// `$test::sqlite` and `$test::postgres`.
macro_rules! on_both_backends {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn sqlite() {
                super::$test($crate::common::Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$test($crate::common::Backend::Postgres).await;
            }
        }
    };
}

/// The gateway's warnings and errors, in the output of the test that caused them (shown
/// when it fails): an unexpected `500` says why. `RUST_LOG` overrides the level.
fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
