//! A plugin that misbehaves on purpose, for the host's tests. `configure` picks how:
//! `spin` (never returns), `memory` (allocates without end), `trap` (panics), `huge`
//! (answers with an enormous rewrite), `slow` (works a while, then allows), `logs`
//! (logs without end), or anything else to behave.

use std::sync::Mutex;

wit_bindgen::generate!({ world: "moderator", path: "../../wit" });

use livechat::plugin::host::{Level, log};

static MODE: Mutex<String> = Mutex::new(String::new());

struct Hostile;

impl Guest for Hostile {
    fn configure(config: String) -> Result<(), String> {
        *MODE.lock().map_err(|_| "poisoned")? = config;
        Ok(())
    }

    fn check(message: Message) -> Verdict {
        let mode = MODE.lock().map(|m| m.clone()).unwrap_or_default();
        // Behave for messages that ask for it, so tests can check recovery.
        if message.body == "behave" {
            return Verdict::Allow;
        }
        match mode.as_str() {
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("deliberate trap"),
            "huge" => Verdict::Rewrite("x".repeat(8 << 20)),
            "slow" => {
                let mut n: u64 = 0;
                for i in 0..20_000_000u64 {
                    n = std::hint::black_box(n.wrapping_add(i));
                }
                Verdict::Flag(format!("slow {}", n % 2))
            }
            "logs" => {
                for i in 0..10_000 {
                    log(Level::Warn, &format!("line {i} {}", "y".repeat(4096)));
                }
                Verdict::Allow
            }
            _ => Verdict::Allow,
        }
    }
}

export!(Hostile);
