//! The first command a new user runs: `livechat-server` with no settings at all.

use std::time::Duration;

use rust_socketio::TransportType;
use serde_json::json;
use tokio::process::Command;

use crate::harness::{SocketClientBuilder, spawn_binary};

#[tokio::test]
async fn starts_on_embedded_defaults_prints_a_token_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // Only the port differs from the defaults, so parallel runs do not collide.
    let (mut child, banner) = spawn_binary(dir.path(), &["--bind", "127.0.0.1:0"]).await;
    assert!(
        banner.url.starts_with("http://127.0.0.1:"),
        "{}",
        banner.url
    );
    assert!(
        dir.path().join("livechat.db").exists(),
        "SQLite file created in the working directory"
    );

    let mut agent = SocketClientBuilder::new(&banner.url, &banner.token, TransportType::Websocket)
        .connect()
        .await;
    agent
        .call("join_workspace", json!({ "workspaceId": banner.workspace }))
        .await;
    let sent = agent
        .call(
            "send_message",
            json!({ "contactId": banner.contact, "body": "hello from a new user" }),
        )
        .await;
    assert_eq!(agent.next("new_message").await, sent);

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the server did not stop within 15 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// `livechat-server` with `args` and only the `LIVECHAT_*` variables of `env`, in `dir`:
/// its exit status, stdout and stderr.
async fn run_binary(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_livechat-server"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("LIVECHAT_")) {
        cmd.env_remove(key);
    }
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        cmd.args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the binary did not exit within 30 s")
    .unwrap();
    (
        output.status,
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn print_config_merges_flags_environment_and_file_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("livechat.toml");
    std::fs::write(
        &file,
        r#"
bind = "0.0.0.0:4100"
rate_limit_per_sec = 5
max_json_depth = 12
plugin_deadline_ms = 50
plugins = ["sanitize"]
change_feed = false
database_url = "postgres://livechat:file-db-password@db.internal/livechat"
admin_token = "file-admin-token-0123456789"
jwt_secret = "file-jwt-secret-0123456789abcdefghijkl"
"#,
    )
    .unwrap();
    let (status, stdout, stderr) = run_binary(
        dir.path(),
        &[
            "--config",
            file.to_str().unwrap(),
            "--print-config",
            "--max-json-depth",
            "40",
        ],
        &[
            // The environment beats the file...
            ("LIVECHAT_RATE_LIMIT_PER_SEC", "20"),
            // ...and the flag beats both.
            ("LIVECHAT_MAX_JSON_DEPTH", "30"),
            ("LIVECHAT_TWILIO_AUTH_TOKEN", "env-twilio-token"),
        ],
    )
    .await;
    assert!(status.success(), "{status}: {stderr}");
    for line in [
        "bind = \"0.0.0.0:4100\"",
        "rate_limit_per_sec = 20",
        "max_json_depth = 40",
        "plugin_deadline_ms = 50",
        "rate_limit_burst = 30",
        "plugins = [\"sanitize\"]",
        "change_feed = false",
        "database_url = \"postgres://***@db.internal/livechat\"",
        "# admin_token = <set, hidden>",
        "# jwt_secret = <set, hidden>",
        "# twilio_auth_token = <set, hidden>",
        "# public_url = (unset)",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "`{line}` missing from:\n{stdout}"
        );
    }
    for secret in [
        "file-db-password",
        "file-admin-token",
        "file-jwt-secret",
        "env-twilio-token",
    ] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
        assert!(!stderr.contains(secret), "{secret} on stderr:\n{stderr}");
    }
    assert!(
        !dir.path().join("livechat.db").exists(),
        "--print-config started nothing"
    );

    // What it prints is a config file: loaded again, it gives the same settings.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &stdout).unwrap();
    let (status, again, stderr) = run_binary(
        dir.path(),
        &["--config", printed.to_str().unwrap(), "--print-config"],
        &[],
    )
    .await;
    assert!(status.success(), "{status}: {stderr}");
    let settings = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(settings(&again), settings(&stdout));
}

#[tokio::test]
async fn a_bad_config_file_stops_the_start_with_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("livechat.toml");
    std::fs::write(&file, "rate_limit_per_second = 20\n").unwrap();
    let (status, stdout, stderr) = run_binary(
        dir.path(),
        &["--bind", "127.0.0.1:0"],
        &[("LIVECHAT_CONFIG", file.to_str().unwrap())],
    )
    .await;
    assert!(
        !status.success(),
        "started with a bad config file:\n{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "the config file {}: `rate_limit_per_second` is not a setting (did you mean `rate_limit_per_sec`?)",
            file.display()
        )),
        "{stderr}"
    );
    assert!(!dir.path().join("livechat.db").exists());
}
