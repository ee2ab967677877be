//! The staff console (`/console/`): a real headless Chromium signs in through a stub
//! OpenID provider; role and agency scope; sessions, CSRF and the development sign-in;
//! every disclosure audited. Needs `chromium` and `chromium-driver` (Debian) for the
//! browser test: it fails, never skips, without them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::common::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use referral_gateway::clock::ManualClock;
use serde_json::{Value, json};

const CLIENT_ID: &str = "refgw-console-test";

// ------------------------------------------------------------ stub OpenID provider

#[derive(Clone)]
struct StubIdp {
    issuer: String,
    /// The signing key, its JWK and key id: replaced to rotate the provider's keys.
    signer: Arc<Mutex<(Arc<EncodingKey>, Value, String)>>,
    /// code -> (nonce, code_challenge)
    codes: Arc<Mutex<HashMap<String, (String, String)>>>,
    roles: Arc<Mutex<Vec<String>>>,
    handle: actix_web::dev::ServerHandle,
}

fn query_map(query: &str) -> HashMap<String, String> {
    actix_web::web::Query::<HashMap<String, String>>::from_query(query)
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

async fn start_idp() -> StubIdp {
    use actix_web::{App, HttpRequest, HttpResponse, web};
    let (key, jwk) = es256_key("stub-idp");
    let signer = Arc::new(Mutex::new((Arc::new(key), jwk, "stub-idp".to_owned())));
    let (listener, tls) = dev_https_listener();
    let issuer = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let codes: Arc<Mutex<HashMap<String, (String, String)>>> = Arc::default();
    let roles = Arc::new(Mutex::new(vec!["auditor".to_owned()]));
    let (i, k, c, r) = (issuer.clone(), signer.clone(), codes.clone(), roles.clone());
    let handle = serve_https!(listener, tls, move || {
        let (issuer, key, codes, roles) = (i.clone(), k.clone(), c.clone(), r.clone());
        let jwks_key = key.clone();
        let discovery = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
        });
        let codes2 = codes.clone();
        App::new()
            .route(
                "/.well-known/openid-configuration",
                web::get().to(move || {
                    let d = discovery.clone();
                    async move { HttpResponse::Ok().json(d) }
                }),
            )
            .route(
                "/jwks",
                web::get().to(move || {
                    let jwk = jwks_key.lock().unwrap().1.clone();
                    async move { HttpResponse::Ok().json(json!({"keys": [jwk]})) }
                }),
            )
            .route(
                "/authorize",
                web::get().to(move |req: HttpRequest| {
                    let q = query_map(req.query_string());
                    let code = uuid::Uuid::new_v4().simple().to_string();
                    codes.lock().unwrap().insert(
                        code.clone(),
                        (
                            q.get("nonce").cloned().unwrap_or_default(),
                            q.get("code_challenge").cloned().unwrap_or_default(),
                        ),
                    );
                    let redirect = format!(
                        "{}?code={code}&state={}",
                        q.get("redirect_uri").cloned().unwrap_or_default(),
                        q.get("state").cloned().unwrap_or_default()
                    );
                    async move {
                        HttpResponse::Found()
                            .insert_header(("location", redirect))
                            .finish()
                    }
                }),
            )
            .route(
                "/token",
                web::post().to(move |body: String| {
                    let form = query_map(&body);
                    let code = form.get("code").cloned().unwrap_or_default();
                    let found = codes2.lock().unwrap().remove(&code);
                    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                    let challenge = URL_SAFE_NO_PAD.encode(
                        ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref(),
                    );
                    let response = match found {
                        Some((nonce, expected)) if expected == challenge => {
                            let now = time::OffsetDateTime::now_utc().unix_timestamp();
                            let claims = json!({
                                "iss": issuer, "aud": CLIENT_ID, "sub": "ig.lead@example.org",
                                "iat": now, "exp": now + 300, "nonce": nonce,
                                "roles": roles.lock().unwrap().clone(),
                            });
                            let (signing, _, kid) = key.lock().unwrap().clone();
                            let id_token = sign_es256(&signing, &kid, &claims);
                            HttpResponse::Ok().json(json!({
                                "access_token": "opaque", "token_type": "Bearer",
                                "expires_in": 300, "id_token": id_token,
                            }))
                        }
                        _ => HttpResponse::BadRequest().json(json!({"error": "invalid_grant"})),
                    };
                    async move { response }
                }),
            )
    });
    StubIdp {
        issuer,
        signer,
        codes,
        roles,
        handle,
    }
}

/// The shipped configuration with the console signing in at `idp` (or, without one,
/// only the development sign-in), and a known session key.
fn console_config(idp: Option<&StubIdp>, session_key: &std::path::Path) -> String {
    let mut text = shipped_config_text();
    let mut console = format!(
        "\n[console]\nsession_key_file = \"{}\"\n",
        session_key.display()
    );
    if let Some(idp) = idp {
        text = text.replace(
            "issuer = \"https://login.example.org/referral-gateway-dev\"",
            &format!("issuer = \"{}\"", idp.issuer),
        );
        console.push_str(&format!(
            "client_id = \"{CLIENT_ID}\"\nredirect_url = \"https://localhost:1/console/auth/callback\"\nprovider_name = \"the test provider\"\noidc_ca = \"{ROOT}/certs-example/ca.crt\"\n"
        ));
    }
    text + &console
}

const SESSION_SECRET: [u8; 32] = [42; 32];

fn session_key_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("console-session.key");
    std::fs::write(&path, hex::encode(SESSION_SECRET)).unwrap();
    path
}

/// Starts the gateway on a staff port known in advance (the redirect URI names it).
async fn start(backend: Backend, text: &str, clock: Arc<ManualClock>) -> TestApp {
    let db = TestDatabase::create(backend).await;
    let mut config = test_config(text, &db.url);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    if let Some(staff) = config.staff.as_mut() {
        staff.listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    }
    if let Some(oidc) = config.console.oidc.as_mut() {
        oidc.redirect_url = format!("https://localhost:{port}/console/auth/callback");
    }
    TestApp::start_with_clock(config, db, clock).await
}

// ------------------------------------------------------------ plain HTTP helpers

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(
            &root().join("certs-example/ca.crt"),
            None,
            rustls::ALL_VERSIONS,
        ))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn csrf_in(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// A signed-in console session: (cookie header value, CSRF token).
struct Signed {
    cookie: String,
    csrf: String,
}

async fn dev_sign_in(app: &TestApp, role: &str, agency: &str) -> Signed {
    let client = no_redirects();
    let page = client
        .get(app.staff_url("/console/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let pre = set_cookie(&page, "__Host-refgw-console-pre").expect("pre-session cookie");
    let csrf = csrf_in(&page.text().await.unwrap());
    let r = client
        .post(app.staff_url("/console/auth/dev"))
        .header("cookie", &pre)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&role={role}&agency={agency}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "dev sign-in");
    let cookie = set_cookie(&r, "__Host-refgw-console").expect("session cookie");
    let home = client
        .get(app.staff_url("/console/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), 200);
    let csrf = csrf_in(&home.text().await.unwrap());
    Signed { cookie, csrf }
}

async fn get_page(app: &TestApp, who: &Signed, path: &str) -> reqwest::Response {
    no_redirects()
        .get(app.staff_url(path))
        .header("cookie", &who.cookie)
        .send()
        .await
        .unwrap()
}

async fn post_form(app: &TestApp, who: &Signed, path: &str, body: &str) -> reqwest::Response {
    no_redirects()
        .post(app.staff_url(path))
        .header("cookie", &who.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// Two referrals from the liaison team (CMHT and IAPT), then ten days on: both overdue.
async fn seed(app: &TestApp, clock: &ManualClock, t0: time::OffsetDateTime) -> (String, String) {
    let cmht = app.submit(example_text("cmht")).await;
    let iapt = app.submit(example_text("iapt")).await;
    clock.set(t0 + time::Duration::days(10));
    (cmht, iapt)
}

// ------------------------------------------------------------ the browser

struct Browser {
    driver: std::process::Child,
    client: fantoccini::Client,
    _profile: tempfile::TempDir,
}

async fn browser() -> Browser {
    let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect(
            "chromedriver is missing: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let driver = std::process::Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--ignore-certificate-errors", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }),
    );
    let mut last = None;
    for _ in 0..50 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match fantoccini::ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => {
                return Browser {
                    driver,
                    client,
                    _profile: profile,
                };
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("cannot start a Chromium session through chromedriver: {last:?}");
}

impl Browser {
    async fn stop(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    async fn screenshot(&self, name: &str) {
        if let Ok(dir) = std::env::var("REFGW_CONSOLE_SCREENSHOTS") {
            let png = self.client.screenshot().await.expect("screenshot");
            let dir = root().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }

    /// The path of the page the browser shows.
    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .wait()
            .for_element(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    async fn click(&self, css: &str) {
        self.client
            .wait()
            .for_element(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn browser_signs_in_with_openid_connect_and_walks_the_console() {
    let idp = start_idp().await;
    let dir = tempfile::tempdir().unwrap();
    let text = console_config(Some(&idp), &session_key_file(&dir));
    let t0 = time::OffsetDateTime::now_utc();
    let clock = Arc::new(ManualClock::new(t0));
    let app = start(Backend::Sqlite, &text, clock.clone()).await;
    let (cmht, _iapt) = seed(&app, &clock, t0).await;
    let browser = browser().await;
    let b = &browser;

    // A link to a console page, followed while not signed in: the sign-in page.
    b.client
        .goto(&app.staff_url("/console/agreements"))
        .await
        .unwrap();
    assert_eq!(b.path().await, "/console/sign-in");
    b.screenshot("sign-in").await;
    b.click("#oidc-sign-in").await;
    // Through the provider and back; the callback page moves on to the page asked for.
    b.text("h1").await;
    for _ in 0..50 {
        if b.path().await == "/console/agreements" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(b.path().await, "/console/agreements");
    b.client.goto(&app.staff_url("/console/")).await.unwrap();
    b.text("#totals").await;
    assert_eq!(b.path().await, "/console/");
    b.screenshot("overview").await;

    // The overview's numbers are the API's.
    let token = dev_token(
        &text,
        "api-auditor",
        &[referral_gateway::staff_auth::tokens::Role::Auditor],
        None,
    );
    let report = app.staff_get("/v1/reports/sla", &token, 200).await;
    let rows = report["rows"].as_array().unwrap();
    let total: u64 = rows.iter().map(|r| r["referrals"].as_u64().unwrap()).sum();
    let breached: u64 = rows.iter().map(|r| r["breached"].as_u64().unwrap()).sum();
    assert_eq!(total, 2);
    let totals = b.text("#totals").await;
    assert!(
        totals.contains(&format!("Referrals\n{total}"))
            || totals.contains(&format!("Referrals {total}")),
        "{totals}"
    );
    assert!(
        totals.contains(&format!("breached clock\n{breached}"))
            || totals.contains(&format!("breached clock {breached}")),
        "{totals}"
    );
    let table = b.text("#sla-table").await;
    for row in rows {
        assert!(table.contains(row["agency"].as_str().unwrap()), "{table}");
    }
    // Time to first contact against the national standards: both referrals still wait.
    let contact = b.text("#contact-table").await;
    assert!(
        contact.contains("iapt") && contact.contains("NHS Talking Therapies"),
        "{contact}"
    );

    // Overdue referrals of the recipient CMHT, then the referral.
    b.client
        .goto(&app.staff_url("/console/overdue?agency=coventry-cmht"))
        .await
        .unwrap();
    // Each overdue clock with its deadline and how late it is.
    let overdue = b.text("table").await;
    assert!(
        overdue.contains("acknowledge: due") && overdue.contains(" late"),
        "{overdue}"
    );
    b.screenshot("overdue").await;
    b.click(&format!("a[href='/console/referrals/{cmht}']"))
        .await;
    assert_eq!(b.text("#referral-id").await, cmht);
    // Statuses, clocks and their states in words, a breach as a red tag.
    let clocks = b.text("table").await;
    assert!(
        clocks.contains("Acknowledge") && clocks.contains("Breached"),
        "{clocks}"
    );
    assert!(
        b.text(".nhsuk-tag--red").await.contains("Breached"),
        "the breached clock is tagged"
    );
    b.screenshot("referral").await;

    // Subject access for the examples' person.
    b.client
        .goto(&app.staff_url("/console/subject-access"))
        .await
        .unwrap();
    let nhs = b
        .client
        .find(fantoccini::Locator::Id("nhs_number"))
        .await
        .unwrap();
    nhs.send_keys("943 476 5919").await.unwrap();
    b.click("#find").await;
    let summary = b.text("#sar-summary").await;
    assert!(summary.contains(&cmht), "{summary}");
    b.screenshot("subject-access").await;

    // The audit log.
    b.client
        .goto(&app.staff_url("/console/audit"))
        .await
        .unwrap();
    b.click("#search").await;
    b.text("table").await;
    b.screenshot("audit").await;

    // Sign out: back to sign-in, and the console is closed again.
    b.click("#sign-out").await;
    b.text(".nhsuk-inset-text").await;
    b.client.goto(&app.staff_url("/console/")).await.unwrap();
    assert_eq!(b.path().await, "/console/sign-in");

    browser.stop().await;
    idp.handle.stop(false).await;
    app.stop().await;
}

#[tokio::test]
async fn a_provider_account_without_a_staff_role_is_refused() {
    let idp = start_idp().await;
    *idp.roles.lock().unwrap() = vec!["nurse".into()];
    let dir = tempfile::tempdir().unwrap();
    let text = console_config(Some(&idp), &session_key_file(&dir));
    let app = start(
        Backend::Sqlite,
        &text,
        Arc::new(ManualClock::new(time::OffsetDateTime::now_utc())),
    )
    .await;
    let client = no_redirects();
    let start_r = client
        .get(app.staff_url("/console/auth/oidc"))
        .send()
        .await
        .unwrap();
    assert_eq!(start_r.status(), 303);
    let login = set_cookie(&start_r, "__Host-refgw-console-login").unwrap();
    let authorize = start_r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );
    let back = staff_client_no_redirect_get(&client, &authorize).await;
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let r = client
        .get(&callback)
        .header("cookie", &login)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(set_cookie(&r, "__Host-refgw-console").is_none());
    // A callback without the login cookie (or with another state) is refused too.
    let r = client.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let _ = (&idp.signer, &idp.codes);
    idp.handle.stop(false).await;
    app.stop().await;
}

/// Signs in through the stub provider with reqwest (no browser): the callback's status.
async fn oidc_sign_in_status(client: &reqwest::Client, app: &TestApp) -> u16 {
    let start_r = client
        .get(app.staff_url("/console/auth/oidc"))
        .send()
        .await
        .unwrap();
    assert_eq!(start_r.status(), 303);
    let login = set_cookie(&start_r, "__Host-refgw-console-login").unwrap();
    let authorize = start_r.headers()["location"].to_str().unwrap().to_owned();
    let back = staff_client_no_redirect_get(client, &authorize).await;
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let r = client
        .get(&callback)
        .header("cookie", &login)
        .send()
        .await
        .unwrap();
    if r.status() == 200 {
        assert!(set_cookie(&r, "__Host-refgw-console").is_some());
    }
    r.status().as_u16()
}

/// The provider rotates its signing key at once (as Keycloak can): the console, which
/// cached the old key with the provider's metadata, discovers the new one when an ID
/// token does not verify, instead of refusing every sign-in until its cache expires.
#[actix_web::test]
async fn a_rotated_provider_key_is_fetched_again() {
    let idp = start_idp().await;
    let dir = tempfile::tempdir().unwrap();
    let text = console_config(Some(&idp), &session_key_file(&dir));
    let app = start(
        Backend::Sqlite,
        &text,
        Arc::new(ManualClock::new(time::OffsetDateTime::now_utc())),
    )
    .await;
    let client = no_redirects();
    assert_eq!(oidc_sign_in_status(&client, &app).await, 200);
    let (key, jwk) = es256_key("stub-idp-2");
    *idp.signer.lock().unwrap() = (Arc::new(key), jwk, "stub-idp-2".to_owned());
    // Discovery is repeated at most every 5 s for this reason.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert_eq!(oidc_sign_in_status(&client, &app).await, 200);
    // A token no published key verifies is still refused.
    let (stray, _) = es256_key("stub-idp-2");
    idp.signer.lock().unwrap().0 = Arc::new(stray);
    assert_eq!(oidc_sign_in_status(&client, &app).await, 403);
    idp.handle.stop(false).await;
    app.stop().await;
}

async fn staff_client_no_redirect_get(client: &reqwest::Client, url: &str) -> reqwest::Response {
    client.get(url).send().await.unwrap()
}

#[tokio::test]
async fn a_service_manager_sees_only_their_agency() {
    let dir = tempfile::tempdir().unwrap();
    let text = console_config(None, &session_key_file(&dir));
    let t0 = time::OffsetDateTime::now_utc();
    let clock = Arc::new(ManualClock::new(t0));
    let app = start(Backend::Sqlite, &text, clock.clone()).await;
    let (cmht, iapt) = seed(&app, &clock, t0).await;
    let manager = dev_sign_in(&app, "service_manager", "coventry-cmht").await;
    let pages = [
        (format!("/console/referrals/{cmht}"), 200),
        (format!("/console/referrals/{iapt}"), 404),
        ("/console/".to_owned(), 200),
        ("/console/?agency=coventry-liaison".to_owned(), 403),
        ("/console/overdue?agency=coventry-liaison".to_owned(), 403),
        ("/console/audit".to_owned(), 403),
        ("/console/subject-access".to_owned(), 403),
        ("/console/agreements".to_owned(), 403),
        ("/console/repeats".to_owned(), 403),
    ];
    for (path, status) in pages {
        let got = get_page(&app, &manager, &path).await.status();
        assert_eq!(got, status, "GET {path}");
    }
    let csrf = format!("csrf={}", manager.csrf);
    let forms = [
        ("/console/subject-access", "&nhs_number=9434765919"),
        ("/console/audit", ""),
        ("/console/audit/export", "&format=csv"),
    ];
    for (path, rest) in forms {
        let got = post_form(&app, &manager, path, &format!("{csrf}{rest}")).await;
        assert_eq!(got.status(), 403, "POST {path}");
    }
    // The outbox backlog counts every agency's messages: an auditor's figure only.
    let overview = get_page(&app, &manager, "/console/")
        .await
        .text()
        .await
        .unwrap();
    assert!(!overview.contains("Outbox backlog"), "{overview}");
    let auditor = dev_sign_in(&app, "auditor", "").await;
    let overview = get_page(&app, &auditor, "/console/")
        .await
        .text()
        .await
        .unwrap();
    assert!(overview.contains("Outbox backlog"), "{overview}");
    // `/console` (no slash) is a console response too: its headers.
    let r = no_redirects()
        .get(app.staff_url("/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert!(r.headers().contains_key("content-security-policy"));
    app.stop().await;
}

#[tokio::test]
async fn sessions_csrf_headers_and_the_development_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let text = console_config(None, &session_key_file(&dir));
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let app = start(Backend::Sqlite, &text, clock.clone()).await;
    let client = no_redirects();
    // Without a session every page sends the browser to sign in.
    for path in [
        "/console/",
        "/console/overdue",
        "/console/audit",
        "/console/subject-access",
        "/console/agreements",
        "/console/referrals/x",
    ] {
        let r = client.get(app.staff_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{path}");
        // The page asked for comes back after signing in.
        assert_eq!(
            r.headers()["location"],
            format!("/console/sign-in?next={}", path.replace('/', "%2F")),
            "{path}"
        );
    }
    // A form sent without a session is not returned to.
    let r = client
        .post(app.staff_url("/console/audit"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/sign-in");
    // The sign-in page keeps a console page to return to, and drops any other address.
    let page = client
        .get(app.staff_url("/console/sign-in?next=%2Fconsole%2Foverdue%3Fagency%3Dcoventry-cmht"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"name="next" value="/console/overdue?agency=coventry-cmht""#),
        "{page}"
    );
    for elsewhere in [
        "%2F%2Fevil.example%2F",
        "https%3A%2F%2Fevil.example%2F",
        "%2Fconsole%2Fsign-out",
    ] {
        let page = client
            .get(app.staff_url(&format!("/console/sign-in?next={elsewhere}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!page.contains(r#"name="next""#), "{elsewhere}: {page}");
        assert!(!page.contains("evil.example"), "{elsewhere}");
    }
    // The development sign-in goes on to the page asked for, and only to a console page.
    for (next, to) in [
        ("%2Fconsole%2Fagreements", "/console/agreements"),
        ("%2F%2Fevil.example%2F", "/console/"),
    ] {
        let page = client
            .get(app.staff_url("/console/sign-in"))
            .send()
            .await
            .unwrap();
        let pre = set_cookie(&page, "__Host-refgw-console-pre").expect("pre-session cookie");
        let csrf = csrf_in(&page.text().await.unwrap());
        let r = client
            .post(app.staff_url("/console/auth/dev"))
            .header("cookie", &pre)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("csrf={csrf}&role=auditor&agency=&next={next}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{next}");
        assert_eq!(r.headers()["location"], to, "{next}");
    }
    // Headers on every page.
    let r = client
        .get(app.staff_url("/console/sign-in"))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && csp.contains("form-action 'self'")
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let pre = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        pre.contains("HttpOnly") && pre.contains("Secure") && pre.contains("SameSite=Strict"),
        "{pre}"
    );

    let auditor = dev_sign_in(&app, "auditor", "").await;
    assert_eq!(
        get_page(&app, &auditor, "/console/audit").await.status(),
        200
    );
    // An error page shown to a signed-in auditor keeps the navigation and who they are.
    let missing = get_page(
        &app,
        &auditor,
        &format!("/console/referrals/{}", uuid::Uuid::now_v7()),
    )
    .await;
    assert_eq!(missing.status(), 404);
    let missing = missing.text().await.unwrap();
    assert!(
        missing.contains("Signed in as dev-auditor")
            && missing.contains(r#"href="/console/audit""#)
            && missing.contains("not one your agency sent or received")
            && !missing.contains("calling agency"),
        "{missing}"
    );
    // The sign-in page says who is signed in already.
    let again = get_page(&app, &auditor, "/console/sign-in").await;
    let again = again.text().await.unwrap();
    assert!(
        again.contains("You are already signed in as <strong>dev-auditor (auditor)</strong>"),
        "{again}"
    );
    // The overdue list: the longest waiting first unless asked otherwise; an order it
    // does not know is the error page.
    let overdue = get_page(&app, &auditor, "/console/overdue?agency=coventry-cmht").await;
    assert_eq!(overdue.status(), 200);
    let listed = overdue.text().await.unwrap();
    assert!(
        listed.contains(r#"<option value="oldest" selected>"#),
        "{listed}"
    );
    let newest = get_page(
        &app,
        &auditor,
        "/console/overdue?agency=coventry-cmht&order=newest",
    )
    .await;
    assert!(
        newest
            .text()
            .await
            .unwrap()
            .contains(r#"<option value="newest" selected>"#)
    );
    // A later page links back to the first, in the same order.
    let later = get_page(
        &app,
        &auditor,
        &format!(
            "/console/overdue?agency=coventry-cmht&cursor=o0_{}",
            uuid::Uuid::now_v7()
        ),
    )
    .await;
    assert_eq!(later.status(), 200);
    assert!(
        later
            .text()
            .await
            .unwrap()
            .contains(r#"href="/console/overdue?agency=coventry-cmht&amp;order=oldest""#)
    );
    let sideways = get_page(
        &app,
        &auditor,
        "/console/overdue?agency=coventry-cmht&order=sideways",
    )
    .await;
    assert_eq!(sideways.status(), 400);
    assert!(
        sideways
            .text()
            .await
            .unwrap()
            .contains("order&#39; must be newest or oldest")
    );
    // A request another site started (Fetch Metadata) is served as if it had no session,
    // even with the genuine cookie: a page or a form action is neither shown nor done.
    for (path, post) in [
        ("/console/overdue?agency=coventry-cmht", false),
        ("/console/referrals/x", false),
        ("/console/audit", true),
    ] {
        let request = if post {
            no_redirects()
                .post(app.staff_url(path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("csrf={}", auditor.csrf))
        } else {
            no_redirects().get(app.staff_url(path))
        };
        let r = request
            .header("cookie", &auditor.cookie)
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{path}");
        let location = r.headers()["location"].to_str().unwrap();
        if post {
            assert_eq!(location, "/console/sign-in", "{path}");
        } else {
            assert!(
                location.starts_with("/console/sign-in?next=%2Fconsole%2F"),
                "{location}"
            );
        }
    }
    // An error page for a cross-site request shows nothing of the session either.
    let foreign = no_redirects()
        .get(app.staff_url("/console/nope"))
        .header("cookie", &auditor.cookie)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    let foreign = foreign.text().await.unwrap();
    assert!(
        !foreign.contains("Signed in as") && !foreign.contains(&auditor.csrf),
        "{foreign}"
    );
    let same_site = no_redirects()
        .get(app.staff_url("/console/audit"))
        .header("cookie", &auditor.cookie)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(same_site.status(), 200);
    // A forged cookie, and a genuine one past its lifetime, are refused.
    let forged = Signed {
        cookie: "__Host-refgw-console=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
        csrf: String::new(),
    };
    assert_eq!(get_page(&app, &forged, "/console/").await.status(), 303);
    let sealer = referral_gateway::api::console::session::Sealer::new(&SESSION_SECRET).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let session =
        |issued_at: i64, last_seen: i64| referral_gateway::api::console::session::Session {
            id: "x".into(),
            subject: "dev-auditor".into(),
            roles: vec!["auditor".into()],
            agency: None,
            issued_at,
            last_seen,
            csrf: "c".into(),
            via: "development".into(),
        };
    let cookie = |s| Signed {
        cookie: format!(
            "__Host-refgw-console={}",
            sealer.seal("__Host-refgw-console", &s).unwrap()
        ),
        csrf: "c".into(),
    };
    let sessions = [
        ("fresh", session(now - 60, now - 60), 200),
        ("idle", session(now - 3600, now - 16 * 60), 303),
        ("absolute", session(now - 9 * 3600, now - 60), 303),
    ];
    for (what, s, status) in sessions {
        let got = get_page(&app, &cookie(s), "/console/audit").await.status();
        assert_eq!(got, status, "{what}");
    }
    // A POST without the CSRF token, or with another, is refused.
    let forms = [
        ("/console/audit", "from=2020-01-01", 400),
        ("/console/audit", "csrf=wrong", 403),
        ("/console/sign-out", "csrf=wrong", 403),
    ];
    for (path, body, status) in forms {
        let got = post_form(&app, &auditor, path, body).await.status();
        assert_eq!(got, status, "POST {path} {body}");
    }
    // A form that cannot be read gets the console's own error page, not plain text.
    let unreadable = post_form(&app, &auditor, "/console/audit", "from=2020-01-01").await;
    assert!(
        unreadable.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        unreadable.headers()
    );
    let page = unreadable.text().await.unwrap();
    assert!(page.contains("The form could not be read"), "{page}");
    assert!(!page.contains("2020-01-01"), "{page}");
    // A search the API cannot read is the form again, with what is wrong and the input.
    let bad = post_form(
        &app,
        &auditor,
        "/console/audit",
        &format!("csrf={}&from=yesterday&to=", auditor.csrf),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let page = bad.text().await.unwrap();
    assert!(page.contains("nhsuk-error-summary"), "{page}");
    assert!(page.contains(r##"<a href="#from">"##), "{page}");
    assert!(page.contains(r#"value="yesterday""#), "{page}");
    // So is an export whose period cannot be read: the audit page again, the export's
    // boxes holding what was typed.
    let bad = post_form(
        &app,
        &auditor,
        "/console/audit/export",
        &format!("csrf={}&format=csv&from=yesterday&to=", auditor.csrf),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let page = bad.text().await.unwrap();
    assert!(
        page.contains("nhsuk-error-summary")
            && page.contains(r##"<a href="#export-from">"##)
            && page.contains(r#"id="export-from" name="from" type="text" value="yesterday""#),
        "{page}"
    );
    // Sign-out ends the session even for a copy of the cookie.
    let r = post_form(
        &app,
        &auditor,
        "/console/sign-out",
        &format!("csrf={}", auditor.csrf),
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        get_page(&app, &auditor, "/console/audit").await.status(),
        303
    );
    // Both recorded, as the development sign-in's staff member (three sign-ins: two
    // above went on to the page asked for).
    assert_eq!(app.count_action("staff.signed_in").await, 3);
    assert_eq!(app.count_action("staff.signed_out").await, 1);
    assert_eq!(
        app.last_audit().await,
        ("staff.signed_out".to_owned(), "console sign-out".to_owned())
    );
    // A development sign-in needs the sign-in page's token.
    assert_eq!(dev_sign_in_without_token(&client, &app).await, 403);
    app.stop().await;

    // With dev_tokens = false the development sign-in does not exist.
    let jwks = dir.path().join("jwks.json");
    let (_, jwk) = es256_key("k");
    std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();
    let text = text
        .replace("dev_tokens = true", "dev_tokens = false")
        .replace(
            &format!("\"{ROOT}/certs-example/staff-jwks.json\""),
            &format!("\"{}\"", jwks.display()),
        );
    let app = start(Backend::Sqlite, &text, clock).await;
    assert_eq!(dev_sign_in_without_token(&client, &app).await, 404);
    let page = client
        .get(app.staff_url("/console/sign-in"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("/console/auth/dev"));
    app.stop().await;
}

/// A development sign-in without the sign-in page's token (and cookie): the status.
async fn dev_sign_in_without_token(client: &reqwest::Client, app: &TestApp) -> u16 {
    let r = client
        .post(app.staff_url("/console/auth/dev"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=x&role=auditor")
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// The part of the agreements page that shows agreement `id`.
fn agreement_section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"agreement-{id}\""))
        .unwrap_or_else(|| panic!("agreement {id} on the page"));
    let rest = &html[start..];
    &rest[..rest.find("</table>").expect("the agreement's table ends")]
}

async fn the_agreements_register_counts_referrals_and_flags_endings(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    // The health agreement ends within 60 days of today; the housing one in 2027.
    let ends = (time::OffsetDateTime::now_utc() + time::Duration::days(30)).date();
    let text = console_config(None, &session_key_file(&dir)).replacen(
        "effective_to = \"2027-12-31\"",
        &format!("effective_to = \"{ends}\""),
        1,
    );
    let t0 = time::OffsetDateTime::now_utc();
    let clock = Arc::new(ManualClock::new(t0));
    let app = start(backend, &text, clock.clone()).await;
    app.submit(example_text("cmht")).await;
    app.submit(example_text("cmht")).await;
    app.submit(example_text("housing")).await;
    // The default period ends now (exclusive): the manual clock moves on past the referrals.
    clock.set(t0 + time::Duration::minutes(5));
    let auditor = dev_sign_in(&app, "auditor", "").await;
    let before = app.count_action("audit.queried").await;
    let r = get_page(&app, &auditor, "/console/agreements").await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(app.count_action("audit.queried").await > before);
    assert!(html.contains("href=\"/console/agreements\" aria-current=\"page\""));
    let health = agreement_section(&html, "coventry-ld-health-2026");
    assert!(
        health.contains("UK GDPR Art. 6(1)(e) public task"),
        "{health}"
    );
    assert!(health.contains("app-referral-count\">2<"), "{health}");
    assert!(health.contains("nhsuk-tag--orange"), "{health}");
    assert!(health.contains("Ends within 60 days"), "{health}");
    assert!(health.contains(&ends.to_string()), "{health}");
    assert!(health.contains("service types: cmht, iapt, substance_misuse in coventry"));
    let housing = agreement_section(&html, "coventry-ld-housing-duty-to-refer-2026");
    assert!(
        housing.contains("UK GDPR Art. 6(1)(c) legal obligation"),
        "{housing}"
    );
    assert!(housing.contains("app-referral-count\">1<"), "{housing}");
    assert!(housing.contains("In force"), "{housing}");
    assert!(!housing.contains("nhsuk-tag--orange"), "{housing}");
    assert!(housing.contains("2027-12-31"), "{housing}");
    // A period before the referrals: none counted.
    let r = get_page(
        &app,
        &auditor,
        "/console/agreements?from=2026-01-01&to=2026-01-02",
    )
    .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        agreement_section(&html, "coventry-ld-health-2026").contains("app-referral-count\">0<")
    );
    // Dates typed into the period form read back as typed (the page's sentence gives the
    // exact bounds).
    let typed = get_page(
        &app,
        &auditor,
        "/console/agreements?from=2026-01-01&to=2026-01-02",
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        typed.contains(r#"value="2026-01-01""#)
            && typed.contains(r#"value="2026-01-02""#)
            && typed.contains("to 2026-01-03T00:00:00Z"),
        "{typed}"
    );
    // A period that does not parse: the period form again, with what is wrong and what
    // was typed, as on the overview and repeats pages.
    for page in ["/console/agreements", "/console/repeats", "/console/"] {
        let r = get_page(
            &app,
            &auditor,
            &format!("{page}?from=yesterday&to=2026-02-30"),
        )
        .await;
        assert_eq!(r.status(), 400, "{page}");
        let html = r.text().await.unwrap();
        assert!(
            html.contains("There is a problem with the period")
                && html.contains(r#"value="yesterday""#)
                && html.contains(r#"value="2026-02-30""#)
                && html.contains(&format!(r#"action="{page}""#))
                && html.contains("Signed in as dev-auditor"),
            "{page}: {html}"
        );
    }
    app.stop().await;
}

on_both_backends!(the_agreements_register_counts_referrals_and_flags_endings);

async fn disclosures_are_audited(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let text = console_config(None, &session_key_file(&dir));
    let t0 = time::OffsetDateTime::now_utc();
    let clock = Arc::new(ManualClock::new(t0));
    let app = start(backend, &text, clock.clone()).await;
    let (cmht, _) = seed(&app, &clock, t0).await;
    let auditor = dev_sign_in(&app, "auditor", "").await;
    let checks: [(&'static str, &str, Option<String>); 5] = [
        ("report.sla", "/console/", None),
        ("referral.read", &format!("/console/referrals/{cmht}"), None),
        (
            "audit.queried",
            "/console/audit",
            Some(format!("csrf={}", auditor.csrf)),
        ),
        (
            "audit.disclosures",
            "/console/subject-access",
            Some(format!("csrf={}&nhs_number=9434765919", auditor.csrf)),
        ),
        (
            "audit.exported",
            "/console/audit/export",
            Some(format!("csrf={}&format=csv", auditor.csrf)),
        ),
    ];
    for (action, path, form) in checks {
        let before = app.count_action(action).await;
        let r = match &form {
            None => get_page(&app, &auditor, path).await,
            Some(body) => post_form(&app, &auditor, path, body).await,
        };
        assert_eq!(r.status(), 200, "{path}");
        let _ = r.bytes().await.unwrap();
        assert!(
            app.count_action(action).await > before,
            "{action} after {path}"
        );
    }
    // The statement says when and by whom it was produced, and what it was searched by.
    let html = post_form(
        &app,
        &auditor,
        "/console/subject-access",
        &format!("csrf={}&nhs_number=9434765919&format=html", auditor.csrf),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        html.contains("by staff:dev-auditor") && html.contains("NHS number"),
        "{html}"
    );
    // Problems in the form's words, not the API's members.
    for (body, words) in [
        (
            "",
            "Enter an NHS number, or a name and date of birth, or both.",
        ),
        ("&nhs_number=123", "Enter a valid 10-digit NHS number"),
        (
            "&given=Alex&date_of_birth=1984-03-07",
            "Enter both the given name and the family name.",
        ),
        (
            "&given=Alex&family=Smith&date_of_birth=1984-02-30",
            "Enter the date of birth as a real date",
        ),
    ] {
        let r = post_form(
            &app,
            &auditor,
            "/console/subject-access",
            &format!("csrf={}{body}&format=html", auditor.csrf),
        )
        .await;
        assert_eq!(r.status(), 422, "{body}");
        let html = r.text().await.unwrap();
        assert!(html.contains(words), "{body}: {html}");
        assert!(!html.contains("&#39;nhs_number&#39;"), "{body}");
    }
    // The statement as CSV holds the seeded referral.
    let r = post_form(
        &app,
        &auditor,
        "/console/subject-access",
        &format!("csrf={}&nhs_number=9434765919&format=csv", auditor.csrf),
    )
    .await;
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(r.text().await.unwrap().contains(&cmht));
    app.stop().await;
}

on_both_backends!(disclosures_are_audited);

/// A person with more entries than one page of the API (5,000): the console's statement
/// lists every one, reading page after page, each page recorded as an API request is.
#[tokio::test]
async fn a_long_subject_access_statement_is_read_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let text = console_config(None, &session_key_file(&dir));
    let t0 = time::OffsetDateTime::now_utc();
    let clock = Arc::new(ManualClock::new(t0));
    let app = start(Backend::Sqlite, &text, clock.clone()).await;
    let (cmht, _) = seed(&app, &clock, t0).await;
    use sqlx::Row;
    let key: String = sqlx::query(
        "SELECT person_key FROM audit_log WHERE action = 'referral.submitted' AND referral_id = $1",
    )
    .bind(&cmht)
    .fetch_one(app.store.pool())
    .await
    .unwrap()
    .get(0);
    // 5,050 reads of the referral recorded under the person's key.
    let reads: Vec<referral_gateway::store::AuditRecord> = (0..5_050)
        .map(|_| referral_gateway::store::AuditRecord {
            person_key: Some(key.clone()),
            ..referral_gateway::store::AuditRecord::new(
                "agency:coventry-cmht",
                referral_gateway::domain::audit::AuditAction::ReferralRead,
            )
            .referral(&cmht)
        })
        .collect();
    app.store.audit_all(&reads, t0).await.unwrap();
    let auditor = dev_sign_in(&app, "auditor", "").await;
    let before = app.count_action("audit.disclosures").await;
    let r = post_form(
        &app,
        &auditor,
        "/console/subject-access",
        &format!("csrf={}&nhs_number=9434765919&format=csv", auditor.csrf),
    )
    .await;
    assert_eq!(r.status(), 200);
    let csv = r.text().await.unwrap();
    // A header line, then one line per entry: the seeded ones and the 5,050 reads.
    let lines = csv.lines().count() - 1;
    assert!(lines > 5_050, "{lines} lines");
    assert!(!csv.contains("# incomplete"), "{csv:.200}");
    // Two pages of the API: two requests recorded (one person key).
    assert_eq!(app.count_action("audit.disclosures").await - before, 2);
    let r = post_form(
        &app,
        &auditor,
        "/console/subject-access",
        &format!("csrf={}&nhs_number=9434765919", auditor.csrf),
    )
    .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(!html.contains("sar-incomplete"));
    assert_eq!(
        html.matches("<h3 class=\"nhsuk-heading-s\"><strong class=\"nhsuk-tag")
            .count(),
        lines + 2,
        "one statement per line of the CSV, and the CSV request's two pages (recorded under the person's key)"
    );
    app.stop().await;
}

/// The row of the repeat-referrals counts table for `service_type`.
fn repeats_row<'a>(html: &'a str, service_type: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"repeats-{service_type}\""))
        .unwrap_or_else(|| panic!("no row for {service_type}: {html}"));
    let rest = &html[start..];
    &rest[..rest.find("</tr>").expect("the row ends")]
}

async fn the_repeat_referrals_page_counts_people_and_remade_referrals(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let text = console_config(None, &session_key_file(&dir));
    let t0 = time::OffsetDateTime::now_utc();
    let clock = Arc::new(ManualClock::new(t0));
    let app = start(backend, &text, clock.clone()).await;
    let alex = example_text("cmht");
    let other = alex
        .replacen("943 476 5919", "401 023 2137", 1)
        .replacen("\"given\": \"Alex\"", "\"given\": \"Sam\"", 1)
        .replacen("\"family\": \"Example\"", "\"family\": \"Otherperson\"", 1);
    assert_ne!(alex, other);
    // Alex: referred to CMHT three times, the first declined before the third.
    let first = app.submit(alex.clone()).await;
    clock.set(t0 + time::Duration::seconds(10));
    let second = app.submit(alex.clone()).await;
    clock.set(t0 + time::Duration::seconds(20));
    app.post_event_as(
        "coventry-cmht",
        &first,
        &event(
            "declined",
            json!({"reason_code": "out_of_area", "detail": "Lives in Warwick."}),
        ),
        201,
    )
    .await;
    clock.set(t0 + time::Duration::seconds(30));
    let third = app.submit(alex.clone()).await;
    // Sam: twice.
    clock.set(t0 + time::Duration::seconds(40));
    let sam1 = app.submit(other.clone()).await;
    clock.set(t0 + time::Duration::seconds(50));
    let sam2 = app.submit(other.clone()).await;
    // The default period ends now (exclusive).
    clock.set(t0 + time::Duration::minutes(5));

    let auditor = dev_sign_in(&app, "auditor", "").await;
    let before = app.count_action("audit.queried").await;
    let r = get_page(&app, &auditor, "/console/repeats").await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(app.count_action("audit.queried").await > before);
    assert!(html.contains("href=\"/console/repeats\" aria-current=\"page\""));
    // cmht: Sam in "2", Alex in "3–4", nobody in "5+", one referral re-made after a decline.
    let cmht = repeats_row(&html, "cmht");
    let counts: Vec<&str> = cmht
        .split("app-repeat-count\">")
        .skip(1)
        .map(|c| &c[..c.find('<').unwrap()])
        .collect();
    assert_eq!(counts, ["1", "1", "0"], "{cmht}");
    assert!(cmht.contains("app-remade-count\">1<"), "{cmht}");
    // The drill-down links every referral; people are numbered by first referral: Alex first.
    for id in [&first, &second, &third, &sam1, &sam2] {
        assert!(
            html.contains(&format!("href=\"/console/referrals/{id}\"")),
            "{id}: {html}"
        );
    }
    assert!(html.contains("Person 1") && html.contains("Person 2"));
    assert!(!html.contains("Person 3"));
    let alex_row = &html[html.find("Person 1").unwrap()..html.find("Person 2").unwrap()];
    assert!(alex_row.contains(&third), "{alex_row}");
    assert!(alex_row.contains("re-made after a decline"), "{alex_row}");
    // Never a person key or a name.
    let keys: Vec<String> = {
        use sqlx::Row;
        sqlx::query("SELECT DISTINCT person_key FROM audit_log WHERE person_key IS NOT NULL")
            .fetch_all(app.store.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("person_key"))
            .collect()
    };
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        assert!(!html.contains(key.as_str()), "a person key on the page");
    }
    for name in [
        "Alex",
        "Example",
        "Sam",
        "Otherperson",
        "9434765919",
        "943 476 5919",
    ] {
        assert!(!html.contains(name), "{name} on the page");
    }
    // A period before the referrals: no one.
    let r = get_page(
        &app,
        &auditor,
        "/console/repeats?from=2026-01-01&to=2026-01-02",
    )
    .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(!html.contains("id=\"repeats-cmht\""));
    assert!(html.contains("No one was referred to the same service type more than once"));
    // A service manager may not see it.
    let manager = dev_sign_in(&app, "service_manager", "coventry-cmht").await;
    assert_eq!(
        get_page(&app, &manager, "/console/repeats").await.status(),
        403
    );
    app.stop().await;
}

on_both_backends!(the_repeat_referrals_page_counts_people_and_remade_referrals);

/// Polls the audit page until "verify now" has ended; the page's verification block.
async fn verification_outcome(app: &TestApp, who: &Signed) -> String {
    for _ in 0..200 {
        let r = get_page(app, who, "/console/audit").await;
        assert_eq!(r.status(), 200);
        let html = r.text().await.unwrap();
        let start = html
            .find("id=\"verification\"")
            .unwrap_or_else(|| panic!("no verification block: {html}"));
        let block = &html[start..];
        let block = &block[..block.find("</div>").unwrap_or(block.len())];
        if block.contains("data-verified=") {
            return block.to_owned();
        }
        assert!(block.contains("is running"), "{block}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("verify now did not end");
}

/// "Verify now" runs in the background: the POST answers at once with a redirect to the
/// audit page, which shows the outcome; a tampered entry is named; a service manager
/// cannot start one.
async fn verify_now_runs_in_the_background(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let text = console_config(None, &session_key_file(&dir));
    let t0 = time::OffsetDateTime::now_utc();
    let clock = Arc::new(ManualClock::new(t0));
    let app = start(backend, &text, clock.clone()).await;
    seed(&app, &clock, t0).await;
    let auditor = dev_sign_in(&app, "auditor", "").await;
    // What the running gateway's checkpointer would have signed by now.
    referral_gateway::governance::checkpoints::Checkpointer::new(
        app.store.clone(),
        signing_key(),
        1000,
        std::time::Duration::from_secs(300),
    )
    .checkpoint()
    .await
    .unwrap();
    // No run yet: no verification block.
    let html = get_page(&app, &auditor, "/console/audit")
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains("id=\"verification\""));
    // Without the CSRF token nothing starts.
    let r = post_form(&app, &auditor, "/console/audit/verify", "csrf=wrong").await;
    assert_ne!(r.status(), 303);
    assert!(
        !get_page(&app, &auditor, "/console/audit")
            .await
            .text()
            .await
            .unwrap()
            .contains("id=\"verification\"")
    );
    let r = post_form(
        &app,
        &auditor,
        "/console/audit/verify",
        &format!("csrf={}", auditor.csrf),
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/audit#verification");
    let block = verification_outcome(&app, &auditor).await;
    assert!(block.contains("data-verified=\"true\""), "{block}");
    assert!(block.contains("The chain verifies"), "{block}");
    assert!(block.contains("started by"), "{block}");

    // An attacker with database superuser rights switches the protection off and changes
    // an entry: the next run finds it and names it.
    let off: &[&str] = match backend {
        Backend::Sqlite => &[
            "DROP TRIGGER audit_log_no_update",
            "DROP TRIGGER audit_log_no_delete",
        ],
        Backend::Postgres => &["ALTER TABLE audit_log DISABLE TRIGGER USER"],
    };
    for sql in off
        .iter()
        .chain(&["UPDATE audit_log SET action = 'x' WHERE seq = 2"])
    {
        sqlx::query(sql).execute(app.store.pool()).await.unwrap();
    }
    let r = post_form(
        &app,
        &auditor,
        "/console/audit/verify",
        &format!("csrf={}", auditor.csrf),
    )
    .await;
    assert_eq!(r.status(), 303);
    let block = verification_outcome(&app, &auditor).await;
    assert!(block.contains("data-verified=\"false\""), "{block}");
    assert!(block.contains("does NOT verify"), "{block}");
    assert!(block.contains("entry 2"), "{block}");

    // A service manager may not start one.
    let manager = dev_sign_in(&app, "service_manager", "coventry-cmht").await;
    let r = post_form(
        &app,
        &manager,
        "/console/audit/verify",
        &format!("csrf={}", manager.csrf),
    )
    .await;
    assert!(matches!(r.status().as_u16(), 403 | 404), "{}", r.status());
    app.stop().await;
}

on_both_backends!(verify_now_runs_in_the_background);

/// A console address whose query string cannot be read gets the console's own error
/// page, not the API's problem document.
#[tokio::test]
async fn an_unreadable_console_address_gets_the_error_page() {
    let dir = tempfile::tempdir().unwrap();
    let text = console_config(None, &session_key_file(&dir));
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let app = start(Backend::Sqlite, &text, clock).await;
    let auditor = dev_sign_in(&app, "auditor", "").await;
    for path in [
        "/console/overdue?cursor=a&cursor=b",
        "/console/?from=2026-01-01&from=2026-02-01",
    ] {
        let r = get_page(&app, &auditor, path).await;
        assert_eq!(r.status(), 400, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let html = r.text().await.unwrap();
        assert!(html.contains("The address could not be read"), "{path}");
    }
    app.stop().await;
}
