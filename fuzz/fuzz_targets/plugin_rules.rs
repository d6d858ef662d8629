//! The bundled plugins' rules on any text: sanitizing never panics, leaves no tag that
//! opens a script, no control or bidi character, and is stable (sanitizing its own
//! output changes nothing); moderation never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use livechat_plugin_rules::moderation::Rules;
use livechat_plugin_rules::sanitize::{Config, sanitize};

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        Rules::parse(r#"{ "default": { "block": ["free money", "viagra"], "flag": ["refund"] } }"#)
            .unwrap()
    })
}

fuzz_target!(|text: &str| {
    let config = Config { max_chars: 4000 };
    let clean = sanitize(&config, text);
    let lower = clean.to_lowercase();
    assert!(!lower.contains("<script"), "a script tag survived: {clean:?}");
    assert!(
        !clean.chars().any(|c| (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')),
        "a control or bidi character survived: {clean:?}"
    );
    assert_eq!(sanitize(&config, &clean), clean, "sanitizing is not stable for {text:?}");
    let _ = rules().check("ws", text);
});
