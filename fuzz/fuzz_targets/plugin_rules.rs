//! The bundled plugins' rules on any text: sanitizing never panics, leaves no tag that
//! opens a script (closed or not), no control or bidi character, and is stable
//! (sanitizing its own output changes nothing); moderation never panics.
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
    let Some(clean) = sanitize(&config, text) else {
        return; // nested too deeply: the message is rejected
    };
    let lower = clean.to_ascii_lowercase();
    // `<script` as a whole tag name: as in HTML, followed by whitespace, `/`, `>` or
    // the end (`<scriptipt` is another, harmless name).
    let opens_script = lower.match_indices("<script").any(|(i, m)| {
        let after = &lower[i + m.len()..];
        after.is_empty() || after.starts_with(|c: char| c.is_whitespace() || c == '/' || c == '>')
    });
    assert!(!opens_script, "a script tag survived: {clean:?}");
    assert!(
        !clean.chars().any(|c| (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')),
        "a control or bidi character survived: {clean:?}"
    );
    assert_eq!(sanitize(&config, &clean).as_ref(), Some(&clean), "sanitizing is not stable for {text:?}");
    let _ = rules().check("ws", text);
});
