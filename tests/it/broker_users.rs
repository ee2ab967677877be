//! `broker definitions` imported into the real broker (a vhost of the test's own): each
//! agency's user reads its own queues only and publishes nothing; the gateway's user
//! declares the same topology (same arguments) and publishes.

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions};

use crate::common::cli::{gateway, output};
use crate::common::*;

/// A vhost and users made for one test, deleted afterwards (even when it fails).
struct BrokerObjects {
    vhost: String,
    users: Vec<String>,
}

impl Drop for BrokerObjects {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.vhost]);
        for user in &self.users {
            let _ = rabbitmqctl(&["delete_user", user]);
        }
    }
}

fn rabbitmqctl(args: &[&str]) -> (bool, String) {
    match std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
    {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("rabbitmqctl: {e}")),
    }
}

fn url(user: &str, password: &str, vhost: &str) -> String {
    format!("amqp://{user}:{password}@127.0.0.1:5672/{vhost}")
}

async fn connect(url: &str) -> (lapin::Connection, lapin::Channel) {
    referral_gateway::delivery::topology::connect_confirming(url)
        .await
        .expect("the imported user logs in")
}

/// What a refused operation's error says.
fn refused(error: &lapin::Error) -> bool {
    format!("{error:?}").contains("ACCESS_REFUSED")
}

async fn get(channel: &lapin::Channel, queue: &str) -> Result<Option<Vec<u8>>, lapin::Error> {
    use lapin::options::BasicAckOptions;
    let got = channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await?;
    match got {
        None => Ok(None),
        Some(message) => {
            message
                .delivery
                .acker
                .ack(BasicAckOptions::default())
                .await?;
            Ok(Some(message.delivery.data))
        }
    }
}

async fn publish(channel: &lapin::Channel, exchange: &str, key: &str) -> Result<(), lapin::Error> {
    channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            b"{}",
            lapin::BasicProperties::default().with_message_id("test".into()),
        )
        .await?
        .await?;
    Ok(())
}

async fn publish_typed(channel: &lapin::Channel, exchange: &str, key: &str, kind: &str, id: &str) {
    channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            b"{\"example\": true}",
            lapin::BasicProperties::default()
                .with_message_id(id.into())
                .with_type(kind.into())
                .with_content_type("application/json".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn agency_users_read_only_their_own_queues() {
    let namespace = unique_namespace();
    let vhost = format!("refgw-{namespace}");
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    let file = dir.path().join("definitions.json");
    let (code, out) = output(
        gateway()
            .args(["broker", "definitions", "--passwords"])
            .arg(&passwords)
            .arg("--out")
            .arg(&file)
            .args(["--vhost", &vhost])
            .env("REFGW_AMQP_NAMESPACE", &namespace),
    );
    assert_eq!(code, Some(0), "{out}");
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let users: Vec<String> = document["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    let _objects = BrokerObjects {
        vhost: vhost.clone(),
        users: users.clone(),
    };
    assert!(
        users.contains(&format!("{namespace}.coventry-cmht")),
        "{users:?}"
    );
    assert!(users.contains(&format!("{namespace}.referral-gateway")));
    assert!(users.contains(&format!("{namespace}.referral-escalations")));
    // Hashes only: no password in the document.
    let password = |name: &str| {
        std::fs::read_to_string(passwords.join(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&password("coventry-cmht")));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(passwords.join("coventry-cmht"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A second run keeps the passwords.
    let before = password("coventry-cmht");
    let (code, out) = output(
        gateway()
            .args(["broker", "definitions", "--passwords"])
            .arg(&passwords)
            .args(["--vhost", &vhost])
            .env("REFGW_AMQP_NAMESPACE", &namespace),
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(password("coventry-cmht"), before);

    // The broker's own user reads the file (rabbitmqctl hands it the path): let it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = rabbitmqctl(&["import_definitions", &file.display().to_string()]);
    assert!(ok, "rabbitmqctl import_definitions: {out}");

    let config = test_config(&shipped_config_text(), "sqlite::memory:");
    let topology =
        referral_gateway::delivery::topology::Topology::new(&namespace, &config.registry);
    let vhost_path = vhost.clone();

    // The gateway's user declares the same topology (no PRECONDITION_FAILED: the imported
    // arguments are the declared ones) and publishes a referral.
    let (gw_conn, gw) = connect(&url(
        &format!("{namespace}.referral-gateway"),
        &password("referral-gateway"),
        &vhost_path,
    ))
    .await;
    topology
        .declare(&gw)
        .await
        .expect("the gateway's user declares its topology");
    publish(
        &gw,
        &topology.referrals_exchange(),
        "cmht.coventry.coventry-cmht",
    )
    .await
    .expect("the gateway publishes");
    publish(
        &gw,
        &topology.status_exchange(),
        "coventry-liaison.acknowledged",
    )
    .await
    .expect("the gateway publishes status");

    // The receiving agency reads its own queue (and its dead-letter queue)...
    let (cmht_conn, cmht) = connect(&url(
        &format!("{namespace}.coventry-cmht"),
        &password("coventry-cmht"),
        &vhost_path,
    ))
    .await;
    let mut got = None;
    for _ in 0..50 {
        got = get(&cmht, &topology.referral_queue("coventry-cmht"))
            .await
            .expect("reads its own queue");
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got.as_deref(), Some(&b"{}"[..]));
    assert!(
        get(&cmht, &topology.dead_letter_queue("coventry-cmht"))
            .await
            .expect("reads its own dead-letter queue")
            .is_none()
    );
    // ...but not another agency's queue (the channel closes: open a new one each time),
    let e = get(&cmht, &topology.referral_queue("coventry-iapt"))
        .await
        .unwrap_err();
    assert!(refused(&e), "{e:?}");
    // nor publish to the referrals exchange,
    let channel = cmht_conn.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let e = publish(
        &channel,
        &topology.referrals_exchange(),
        "cmht.coventry.coventry-cmht",
    )
    .await
    .unwrap_err();
    // The broker closes the channel with ACCESS_REFUSED; the pending confirm may report
    // either that or the closed channel.
    assert!(refused(&e) || !channel.status().connected(), "{e:?}");
    // nor declare anything.
    let channel = cmht_conn.create_channel().await.unwrap();
    let e = channel
        .queue_declare(
            format!("{namespace}.mine").into(),
            lapin::options::QueueDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert!(refused(&e), "{e:?}");

    // A sender reads its status queue only.
    let (liaison_conn, liaison) = connect(&url(
        &format!("{namespace}.coventry-liaison"),
        &password("coventry-liaison"),
        &vhost_path,
    ))
    .await;
    let mut status = None;
    for _ in 0..50 {
        status = get(&liaison, &topology.status_queue("coventry-liaison"))
            .await
            .expect("reads its status queue");
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status.is_some(), "the status message arrives");
    let e = get(&liaison, &topology.referral_queue("coventry-cmht"))
        .await
        .unwrap_err();
    assert!(refused(&e), "{e:?}");

    // The escalations user reads the escalations queue, and nothing else.
    publish(
        &gw,
        &topology.escalations_exchange(),
        "coventry-cmht.acknowledge",
    )
    .await
    .expect("the gateway publishes an escalation");
    let (_escalations_conn, escalations) = connect(&url(
        &format!("{namespace}.referral-escalations"),
        &password("referral-escalations"),
        &vhost_path,
    ))
    .await;
    let mut escalation = None;
    for _ in 0..50 {
        escalation = get(&escalations, &topology.escalations_queue())
            .await
            .expect("reads the escalations queue");
        if escalation.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(escalation.is_some(), "the escalation arrives");
    let e = get(&escalations, &topology.referral_queue("coventry-cmht"))
        .await
        .unwrap_err();
    assert!(refused(&e), "{e:?}");

    // The example consumers, as docs/consuming.md runs them, with these users: the
    // receiver's referrals (Python, when pika is there) and the sender's status (Rust).
    let referral_id = uuid::Uuid::now_v7().to_string();
    publish_typed(
        &gw,
        &topology.referrals_exchange(),
        "cmht.coventry.coventry-cmht",
        "referral",
        &referral_id,
    )
    .await;
    publish_typed(
        &gw,
        &topology.status_exchange(),
        "coventry-liaison.acknowledged",
        "status",
        "event-1-sender",
    )
    .await;
    let received = tempfile::tempdir().unwrap();
    let mut consumers = vec![(
        "rust",
        std::process::Command::new(crate::delivery::example_binary("consumer")),
        "coventry-liaison",
        "status",
        received.path().join("status").join("event-1-sender.json"),
    )];
    if crate::delivery::python_has_pika() {
        let mut python = std::process::Command::new("python3");
        python.arg(root().join("examples/consumer.py"));
        consumers.push((
            "python",
            python,
            "coventry-cmht",
            "referrals",
            received.path().join(format!("{referral_id}.json")),
        ));
    } else if std::env::var("REFGW_REQUIRE_PYTHON_CONSUMER").is_ok() {
        panic!("python3 with pika is required (pip install pika)");
    }
    for (name, mut command, agency, queue, expected) in consumers {
        command
            .arg("--amqp-url")
            .arg(url(
                &format!("{namespace}.{agency}"),
                &password(agency),
                &vhost_path,
            ))
            .args([
                "--namespace",
                &namespace,
                "--agency",
                agency,
                "--queue",
                queue,
                "--idle-exit",
                "2",
                "--out",
            ])
            .arg(received.path());
        let out = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let logs = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{name}: {logs}");
        assert!(
            logs.contains(&format!("reading queue {namespace}.{queue}.{agency}")),
            "{name}: {logs}"
        );
        assert!(
            expected.exists(),
            "{name}: {} missing; {logs}",
            expected.display()
        );
    }

    for connection in [gw_conn, cmht_conn, liaison_conn] {
        let _ = connection.close(200, "test done".into()).await;
    }
}
