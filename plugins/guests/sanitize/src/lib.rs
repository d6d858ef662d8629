//! The bundled `sanitize` plugin: plain text only — markup, script, dangerous URLs,
//! control and bidi characters removed, NFC, a length limit. The rules live in
//! `livechat-plugin-rules`; this is only the component's face.

use std::sync::Mutex;

use livechat_plugin_rules::{Verdict as RuleVerdict, sanitize};

wit_bindgen::generate!({ world: "moderator", path: "../../wit" });


static CONFIG: Mutex<Option<sanitize::Config>> = Mutex::new(None);

struct Sanitize;

impl Guest for Sanitize {
    fn configure(config: String) -> Result<(), String> {
        let parsed = sanitize::Config::parse(&config)?;
        *CONFIG.lock().map_err(|_| "poisoned")? = Some(parsed);
        Ok(())
    }

    fn check(message: Message) -> Verdict {
        let config = CONFIG.lock().ok().and_then(|c| c.clone()).unwrap_or_default();
        match sanitize::check(&config, &message.body) {
            RuleVerdict::Allow => Verdict::Allow,
            RuleVerdict::Rewrite(body) => Verdict::Rewrite(body),
            RuleVerdict::Reject(reason) => Verdict::Reject(reason),
            RuleVerdict::Flag(reason) => Verdict::Flag(reason),
        }
    }
}

export!(Sanitize);
