//! A plugin to copy: refuses messages that contain a configured word.
//!
//! Configuration: the word itself, e.g. `"unsubscribe"`.

use std::sync::Mutex;

wit_bindgen::generate!({ world: "moderator", path: "../../wit" });

use livechat::plugin::host::{Level, log};

static WORD: Mutex<String> = Mutex::new(String::new());

struct Template;

impl Guest for Template {
    fn configure(config: String) -> Result<(), String> {
        let word = config.trim().to_lowercase();
        if word.is_empty() {
            return Err("configure me with the word to refuse".into());
        }
        log(Level::Info, &format!("refusing messages with {word:?}"));
        *WORD.lock().map_err(|_| "poisoned")? = word;
        Ok(())
    }

    fn check(message: Message) -> Verdict {
        let word = WORD.lock().map(|w| w.clone()).unwrap_or_default();
        if !word.is_empty() && message.body.to_lowercase().contains(&word) {
            Verdict::Reject(format!("messages may not contain {word:?}"))
        } else {
            Verdict::Allow
        }
    }
}

export!(Template);
