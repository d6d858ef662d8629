//! The bundled `moderation` plugin: word lists per workspace (robust to case, accents,
//! spacing and leetspeak), links and flooding. The rules live in
//! `livechat-plugin-rules`; this is only the component's face.

use std::sync::Mutex;

use livechat_plugin_rules::{Verdict as RuleVerdict, moderation::Rules};

wit_bindgen::generate!({ world: "moderator", path: "../../wit" });


static RULES: Mutex<Option<Rules>> = Mutex::new(None);

struct Moderation;

impl Guest for Moderation {
    fn configure(config: String) -> Result<(), String> {
        let rules = Rules::parse(&config)?;
        *RULES.lock().map_err(|_| "poisoned")? = Some(rules);
        Ok(())
    }

    fn check(message: Message) -> Verdict {
        let rules = RULES.lock().ok();
        let verdict = match rules.as_ref().and_then(|r| r.as_ref()) {
            Some(rules) => rules.check(&message.workspace_id, &message.body),
            None => Rules::default().check(&message.workspace_id, &message.body),
        };
        match verdict {
            RuleVerdict::Allow => Verdict::Allow,
            RuleVerdict::Rewrite(body) => Verdict::Rewrite(body),
            RuleVerdict::Reject(reason) => Verdict::Reject(reason),
            RuleVerdict::Flag(reason) => Verdict::Flag(reason),
        }
    }
}

export!(Moderation);
