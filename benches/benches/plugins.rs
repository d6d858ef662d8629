//! The per-message cost of each bundled plugin in its sandbox, on a typical 200-byte
//! body. Run: `cargo bench -p livechat-benches --bench plugins`

#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use livechat_core::model::{ContactId, Direction, MsgType, WorkspaceId};
use livechat_core::moderation::{Candidate, Moderator};
use livechat_plugins::{PluginEngine, PluginSettings, bundled};

const BODY: &str = "Hi! I ordered the blue jacket last Tuesday (order #48213) and the tracking page \
                    still says 'label created'. Could you check whether it has shipped? Thanks a lot, \
                    Maria — see you soon, have a nice day!";

fn plugins(c: &mut Criterion) {
    assert!(
        (190..=210).contains(&BODY.len()),
        "a typical body is about 200 bytes: {}",
        BODY.len()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = PluginEngine::new().unwrap();
    let moderation_config = r#"{ "default": { "block": ["free money", "viagra", "crypto giveaway"], "flag": ["refund", "lawyer", "chargeback"] } }"#;
    let cases = [
        ("sanitize", bundled::SANITIZE, ""),
        ("moderation", bundled::MODERATION, moderation_config),
    ];
    let candidate = Candidate {
        workspace_id: WorkspaceId::new_v4(),
        contact_id: ContactId::new_v4(),
        sender: Some("+15550100"),
        body: BODY,
        direction: Direction::Inbound,
        msg_type: MsgType::Text,
    };
    let mut group = c.benchmark_group("plugins");
    for (name, wasm, config) in cases {
        let plugin = rt
            .block_on(engine.load(wasm, PluginSettings::new(name).config(config)))
            .unwrap();
        // As the server calls it: on the runtime thread.
        group.bench_function(format!("{name}/200_bytes"), |b| {
            b.to_async(&rt)
                .iter(|| async { plugin.check(candidate).await.unwrap() })
        });
    }
    group.finish();

    let mut native = c.benchmark_group("rules_native");
    let sanitize = livechat_plugin_rules::sanitize::Config::default();
    native.bench_function("sanitize/200_bytes", |b| {
        b.iter(|| livechat_plugin_rules::sanitize::check(&sanitize, BODY))
    });
    let rules = livechat_plugin_rules::moderation::Rules::parse(moderation_config).unwrap();
    native.bench_function("moderation/200_bytes", |b| {
        b.iter(|| rules.check("ws", BODY))
    });
    native.finish();
}

criterion_group!(benches, plugins);
criterion_main!(benches);
