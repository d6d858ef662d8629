//! The REST API end to end: arbitrary methods, paths, query strings, bodies and
//! credentials against the real router on a SQLite file. Every answer is a client
//! error or a success — never a 500, never a panic.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use clap::Parser;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct App {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    contact: String,
    workspace: String,
    agent_token: String,
    _dir: tempfile::TempDir,
}

const ADMIN: &str = "fuzzing-admin-token-0123";

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("fuzz.db").display());
        let config = livechat_server::Config::parse_from([
            "livechat-server",
            "--database-url",
            &db,
            "--admin-token",
            ADMIN,
            "--jwt-secret",
            "fuzzing-secret-fuzzing-secret-fuzz",
            "--rate-limit-per-sec",
            "1000000",
            "--rate-limit-burst",
            "1000000",
            "--socket-rate-limit-per-sec",
            "1000000",
            "--workspace-rate-limit-per-sec",
            "1000000",
            "--workspace-rate-limit-burst",
            "1000000",
        ]);
        let server = runtime.block_on(livechat_server::build(&config)).unwrap();
        let demo = server.demo.clone().unwrap();
        App {
            router: server.router,
            contact: demo.contact_id.to_string(),
            workspace: demo.workspace_id.to_string(),
            agent_token: demo.agent_token.unwrap(),
            runtime,
            _dir: dir,
        }
    })
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    route: u8,
    segment: String,
    query: String,
    body: Vec<u8>,
    json: bool,
    credentials: u8,
}

fuzz_target!(|input: Input| {
    let app = app();
    let method = match input.method % 4 {
        0 => http::Method::GET,
        1 => http::Method::POST,
        2 => http::Method::DELETE,
        _ => http::Method::PUT,
    };
    let ids = [app.contact.as_str(), app.workspace.as_str(), input.segment.as_str()];
    let id = ids[usize::from(input.route / 8) % ids.len()];
    let path = match input.route % 8 {
        0 => "/api/workspaces".to_owned(),
        1 => format!("/api/workspaces/{id}/members"),
        2 => format!("/api/workspaces/{id}/members/{}", input.segment),
        3 => format!("/api/workspaces/{id}/contacts"),
        4 => format!("/api/contacts/{id}/messages"),
        5 => "/healthz".to_owned(),
        6 => "/readyz".to_owned(),
        _ => format!("/{}", input.segment),
    };
    // socket.io has its own fuzzing surface; this target is about the REST routes.
    if path.starts_with("/socket.io") {
        return;
    }
    let Ok(uri) = format!("{path}?{}", input.query).parse::<http::Uri>() else {
        return;
    };
    let mut req = http::Request::builder().method(method).uri(uri);
    if input.json {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    req = match input.credentials % 3 {
        0 => req.header(http::header::AUTHORIZATION, format!("Bearer {ADMIN}")),
        1 => req.header(http::header::AUTHORIZATION, format!("Bearer {}", app.agent_token)),
        _ => req,
    };
    let Ok(req) = req.body(Body::from(input.body)) else {
        return;
    };
    let response = app.runtime.block_on(app.router.clone().oneshot(req)).unwrap();
    assert!(
        !response.status().is_server_error(),
        "the REST API answered {} to fuzzed input",
        response.status()
    );
});
