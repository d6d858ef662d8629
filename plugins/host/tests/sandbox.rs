//! The bundled plugins and the sandbox, through real wasmtime.

use std::time::{Duration, Instant};

use livechat_core::model::{ContactId, Direction, MsgType, WorkspaceId};
use livechat_core::moderation::{Candidate, FailurePolicy, ModerationError, Moderator, Verdict};
use livechat_plugins::{Plugin, PluginEngine, PluginSettings, bundled};

fn candidate(body: &str) -> Candidate<'_> {
    Candidate {
        workspace_id: WorkspaceId(uuid_of(1)),
        contact_id: ContactId(uuid_of(2)),
        sender: Some("agent-1"),
        body,
        direction: Direction::Inbound,
        msg_type: MsgType::Text,
    }
}

fn uuid_of(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

async fn load(wasm: &[u8], settings: PluginSettings) -> Plugin {
    PluginEngine::new()
        .unwrap()
        .load(wasm, settings)
        .await
        .unwrap()
}

#[tokio::test]
async fn sanitize_in_the_sandbox_gives_the_expected_verdicts() {
    let plugin = load(bundled::SANITIZE, PluginSettings::new("sanitize")).await;
    let table = [
        ("Hello there", Verdict::Allow),
        ("a < b > c, Tom & Jerry, I <3 you", Verdict::Allow),
        ("👍🏽 Привет こんにちは مرحبا", Verdict::Allow),
        ("<script>alert(1)</script>hi", Verdict::Rewrite("hi".into())),
        (
            "<img src=x onerror=alert(1)>pic",
            Verdict::Rewrite("pic".into()),
        ),
        (
            "<a href=\"javascript:alert(1)\">click</a>",
            Verdict::Rewrite("click".into()),
        ),
        (
            "invoice\u{202E}fdp.exe",
            Verdict::Rewrite("invoicefdp.exe".into()),
        ),
        ("cafe\u{301}", Verdict::Rewrite("caf\u{e9}".into())),
        ("x=javascript:alert(1)", Verdict::Rewrite("x=".into())),
        (
            "hi <IMG SRC=\"javascript:alert(1)\"",
            Verdict::Rewrite("hi ".into()),
        ),
        ("see https://example.com, a:b", Verdict::Allow),
    ];
    for (input, expected) in table {
        assert_eq!(
            plugin.check(candidate(input)).await.unwrap(),
            expected,
            "{input:?}"
        );
    }
}

#[tokio::test]
async fn moderation_in_the_sandbox_reads_its_configuration() {
    let config =
        r#"{ "default": { "block": ["free money"], "flag": ["refund"] }, "max_links": 1 }"#;
    let plugin = load(
        bundled::MODERATION,
        PluginSettings::new("moderation").config(config),
    )
    .await;
    assert!(matches!(
        plugin.check(candidate("f.r.e.e m0ney!!")).await.unwrap(),
        Verdict::Reject(_)
    ));
    assert!(matches!(
        plugin.check(candidate("I want a r3fund")).await.unwrap(),
        Verdict::Flag(_)
    ));
    assert!(matches!(
        plugin
            .check(candidate("see http://a.example http://b.example"))
            .await
            .unwrap(),
        Verdict::Flag(_)
    ));
    assert_eq!(
        plugin.check(candidate("Where is my order?")).await.unwrap(),
        Verdict::Allow
    );
    let bad = PluginEngine::new()
        .unwrap()
        .load(
            bundled::MODERATION,
            PluginSettings::new("moderation").config("{"),
        )
        .await;
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("refused its configuration")
    );
}

#[tokio::test]
async fn the_template_plugin_works_as_the_guide_says() {
    let plugin = load(
        bundled::TEMPLATE,
        PluginSettings::new("template").config("unsubscribe"),
    )
    .await;
    assert!(matches!(
        plugin
            .check(candidate("please UNSUBSCRIBE me"))
            .await
            .unwrap(),
        Verdict::Reject(_)
    ));
    assert_eq!(
        plugin.check(candidate("hello")).await.unwrap(),
        Verdict::Allow
    );
}

async fn hostile(mode: &str, deadline: Duration) -> Plugin {
    load(
        bundled::HOSTILE,
        PluginSettings::new(format!("hostile-{mode}"))
            .config(mode)
            .deadline(deadline),
    )
    .await
}

/// After a failure, the next message runs on a fresh instance and gets its verdict.
async fn recovers(plugin: &Plugin) {
    let before = plugin.stats().instances;
    assert_eq!(
        plugin.check(candidate("behave")).await.unwrap(),
        Verdict::Allow
    );
    assert!(
        plugin.stats().instances > before,
        "a new instance replaced the failed one"
    );
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_at_the_deadline() {
    let plugin = hostile("spin", Duration::from_millis(20)).await;
    let started = Instant::now();
    let e = plugin.check(candidate("go")).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, ModerationError::Timeout(_)), "{e}");
    assert!(took < Duration::from_millis(500), "stopped after {took:?}");
    assert_eq!(plugin.stats().timeouts, 1);
    recovers(&plugin).await;
    eprintln!("hostile spin: stopped after {took:?} (deadline 20 ms)");
}

#[tokio::test]
async fn a_memory_bomb_hits_the_cap_and_traps() {
    let plugin = load(
        bundled::HOSTILE,
        PluginSettings::new("hostile-memory")
            .config("memory")
            .memory_limit(16 << 20)
            .deadline(Duration::from_secs(2)),
    )
    .await;
    let started = Instant::now();
    let e = plugin.check(candidate("go")).await.unwrap_err();
    assert!(matches!(e, ModerationError::Failed { .. }), "{e}");
    assert_eq!(plugin.stats().traps, 1);
    recovers(&plugin).await;
    eprintln!(
        "hostile memory: trapped at the 16 MiB cap after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_trap_is_contained() {
    let plugin = hostile("trap", Duration::from_millis(200)).await;
    let e = plugin.check(candidate("go")).await.unwrap_err();
    assert!(matches!(e, ModerationError::Failed { .. }), "{e}");
    recovers(&plugin).await;
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let plugin = hostile("huge", Duration::from_secs(2)).await;
    let e = plugin.check(candidate("go")).await.unwrap_err();
    assert!(matches!(e, ModerationError::InvalidOutput { .. }), "{e}");
    assert_eq!(plugin.stats().oversized, 1);
}

#[tokio::test]
async fn logs_are_bounded() {
    let plugin = hostile("logs", Duration::from_secs(5)).await;
    assert_eq!(plugin.check(candidate("go")).await.unwrap(), Verdict::Allow);
    let stats = plugin.stats();
    assert!(stats.logs_dropped >= 9_000, "{stats:?}");
}

// A busy server must not fail a plugin for its own load: the deadline counts the time
// the guest runs, not the time it waits for the runtime after a yield.
#[tokio::test(flavor = "current_thread")]
async fn waiting_for_a_busy_runtime_does_not_count_against_the_deadline() {
    let alone = {
        let probe = hostile("slow", Duration::from_secs(5)).await;
        let started = Instant::now();
        probe.check(candidate("go")).await.unwrap();
        started.elapsed()
    };
    assert!(
        alone >= Duration::from_millis(3),
        "the slow guest runs long enough to yield ({alone:?})"
    );
    let deadline = alone * 3;
    let plugin = hostile("slow", deadline).await;
    // Each time the call yields, this task holds the runtime thread for a whole
    // deadline, as a burst of other work on a saturated server would.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hog = tokio::spawn({
        let done = done.clone();
        async move {
            let mut blocked = 0u32;
            while !done.load(std::sync::atomic::Ordering::SeqCst) && blocked < 3 {
                std::thread::sleep(deadline);
                blocked += 1;
                tokio::task::yield_now().await;
            }
            blocked
        }
    });
    // The hog first runs when the call yields: spawned tasks wait for the test's own.
    let started = Instant::now();
    let outcome = plugin.check(candidate("go")).await;
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let blocked = hog.await.unwrap();
    assert!(
        blocked >= 1 && took > deadline,
        "the call waited behind the busy runtime (blocked {blocked}×, took {took:?}, deadline {deadline:?})"
    );
    assert_eq!(
        outcome.unwrap(),
        Verdict::Flag("slow 0".into()),
        "the call gets its verdict: its own running time ({alone:?} alone) is within the deadline"
    );
    assert_eq!(plugin.stats().timeouts, 0);
    eprintln!(
        "slow plugin on a busy runtime: {took:?} in all, {alone:?} alone, deadline {deadline:?}"
    );
}

// One runtime thread, as livechat-server runs on one core: the plugins' calls and the
// timer share it, so the timer keeps time only if the calls yield.
#[tokio::test(flavor = "current_thread")]
async fn slow_and_spinning_plugins_never_block_the_runtime() {
    let spin = hostile("spin", Duration::from_millis(50)).await;
    let slow = hostile("slow", Duration::from_secs(5)).await;
    // Eight hostile calls at once, while the runtime keeps answering a timer.
    let mut calls = Vec::new();
    for i in 0..8 {
        let p = if i % 2 == 0 {
            spin.clone()
        } else {
            slow.clone()
        };
        calls.push(tokio::spawn(async move { p.check(candidate("go")).await }));
    }
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        worst = worst.max(t.elapsed());
    }
    for (i, c) in calls.into_iter().enumerate() {
        let outcome = c.await.unwrap();
        if i % 2 == 0 {
            assert!(
                matches!(outcome, Err(ModerationError::Timeout(_))),
                "spin ends at its deadline: {outcome:?}"
            );
        } else {
            assert_eq!(
                outcome.unwrap(),
                Verdict::Flag("slow 0".into()),
                "slow finishes in its 5 s"
            );
        }
    }
    assert_eq!(spin.stats().timeouts, 4);
    assert_eq!(slow.stats().verdicts, 4);
    assert!(
        worst < Duration::from_millis(30),
        "a 5 ms timer took {worst:?}: the runtime was blocked"
    );
    eprintln!(
        "hostile slow+spin: 8 calls, runtime timer worst {worst:?} over {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn fail_open_lets_the_message_through_and_fail_closed_does_not() {
    use livechat_core::store::{NewContact, NewWorkspace};
    use livechat_core::{Limits, LiveChat, Publish};
    for (policy, passes) in [(FailurePolicy::Closed, false), (FailurePolicy::Open, true)] {
        let plugin = load(
            bundled::HOSTILE,
            PluginSettings::new("hostile-trap")
                .config("trap")
                .failure_policy(policy),
        )
        .await;
        let (_layer, chat) = LiveChat::builder()
            .moderator(plugin)
            .limits(Limits::default())
            .build_layer();
        let ws = WorkspaceId::new_v4();
        chat.create_workspace(NewWorkspace {
            id: ws,
            name: "w".into(),
            phone: None,
        })
        .await
        .unwrap();
        let contact = ContactId::new_v4();
        chat.create_contact(NewContact {
            id: contact,
            workspace_id: ws,
            name: "c".into(),
            phone: None,
        })
        .await
        .unwrap();
        let r = chat
            .publish(Publish::new(contact, Direction::Inbound, "hello"))
            .await;
        assert_eq!(r.is_ok(), passes, "{policy:?}: {r:?}");
    }
}

/// A LiveChat on the memory store with `plugin` (if any) as its moderator, and a
/// contact to send to.
async fn chat_with(plugin: Option<Plugin>) -> (livechat_core::LiveChat, ContactId, WorkspaceId) {
    use livechat_core::store::{NewContact, NewWorkspace};
    let mut builder = livechat_core::LiveChat::builder();
    if let Some(plugin) = plugin {
        builder = builder.moderator(plugin);
    }
    let (_layer, chat) = builder.build_layer();
    let ws = WorkspaceId::new_v4();
    chat.create_workspace(NewWorkspace {
        id: ws,
        name: "w".into(),
        phone: None,
    })
    .await
    .unwrap();
    let contact = ContactId::new_v4();
    chat.create_contact(NewContact {
        id: contact,
        workspace_id: ws,
        name: "c".into(),
        phone: None,
    })
    .await
    .unwrap();
    (chat, contact, ws)
}

/// The bodies stored in a conversation, newest first.
async fn stored(
    chat: &livechat_core::LiveChat,
    contact: ContactId,
    ws: WorkspaceId,
) -> Vec<String> {
    let reader = livechat_core::auth::Identity {
        user_id: livechat_core::model::UserId("reader".into()),
        expires_at: None,
        workspaces: Some(vec![ws]),
    };
    let request = livechat_core::protocol::HistoryRequest {
        contact_id: contact,
        before: None,
        limit: None,
    };
    let page = chat.history(&reader, request).await.unwrap();
    page.messages.into_iter().map(|m| m.body).collect()
}

// The default flavour: one runtime thread for both chats, so the good messages get
// through only if the hostile call yields, as the server's runtime needs it to.
#[tokio::test]
async fn a_hostile_plugin_gets_its_policy_in_the_pipeline_and_holds_up_no_other_chat() {
    use livechat_core::{ChatError, Publish};
    const DEADLINE: Duration = Duration::from_millis(100);
    const MEMORY: usize = 32 << 20;
    let engine = PluginEngine::new().unwrap();
    // Another chat on the same engine and runtime, with a plugin that behaves.
    let sanitize = engine
        .load(bundled::SANITIZE, PluginSettings::new("sanitize"))
        .await
        .unwrap();
    let (good, good_contact, _) = chat_with(Some(sanitize)).await;

    for mode in ["spin", "memory", "huge"] {
        for policy in [FailurePolicy::Closed, FailurePolicy::Open] {
            let plugin = engine
                .load(
                    bundled::HOSTILE,
                    PluginSettings::new(format!("hostile-{mode}"))
                        .config(mode)
                        .deadline(DEADLINE)
                        .memory_limit(MEMORY)
                        .failure_policy(policy),
                )
                .await
                .unwrap();
            let (chat, contact, ws) = chat_with(Some(plugin.clone())).await;
            let started = Instant::now();
            let hostile = tokio::spawn({
                let chat = chat.clone();
                async move {
                    chat.publish(Publish::new(contact, Direction::Inbound, "go"))
                        .await
                }
            });
            // Messages through the good chat, one after another, for as long as the
            // hostile call runs.
            let (mut sent, mut worst) = (0, Duration::ZERO);
            while sent == 0 || !hostile.is_finished() {
                let t = Instant::now();
                let m = good
                    .publish(Publish::new(
                        good_contact,
                        Direction::Inbound,
                        "<b>hi</b> there",
                    ))
                    .await
                    .unwrap();
                assert_eq!(m.body, "hi there");
                worst = worst.max(t.elapsed());
                sent += 1;
            }
            let outcome = hostile.await.unwrap();
            let took = started.elapsed();

            let stats = plugin.stats();
            let counted = match mode {
                "spin" => stats.timeouts,
                "memory" => stats.traps,
                _ => stats.oversized,
            };
            assert_eq!(counted, 1, "{mode}: {stats:?}");
            match policy {
                FailurePolicy::Closed => {
                    let e = outcome.unwrap_err();
                    assert!(matches!(e, ChatError::Rejected(_)), "{mode}: {e:?}");
                    assert_eq!(e.code(), livechat_core::ErrorCode::Rejected);
                    assert!(stored(&chat, contact, ws).await.is_empty(), "{mode}");
                }
                _ => {
                    assert_eq!(outcome.unwrap().body, "go", "{mode}");
                    assert_eq!(stored(&chat, contact, ws).await, ["go"], "{mode}");
                }
            }
            assert!(
                worst < DEADLINE,
                "{mode}: a good message took {worst:?} while the hostile call ran"
            );
            assert!(took < 5 * DEADLINE, "{mode}: contained after {took:?}");
            eprintln!(
                "hostile {mode} ({policy:?}, deadline {DEADLINE:?}, memory {} MiB): \
                 contained after {took:?}; meanwhile {sent} good messages, worst {worst:?}",
                MEMORY >> 20
            );
        }
    }
}
