//! Word lists, links and flooding.
//!
//! Word lists are matched on a normalised form of the text: lower case, accents
//! removed, leetspeak read as letters (`m0ney` → `money`), punctuation inside a word
//! dropped (`f.r.e.e` → `free`) and letters spelled out one by one joined
//! (`f r e e` → `free`). Entries match whole words (or word sequences), so `class`
//! never matches `ass`.

use std::collections::HashMap;

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use crate::Verdict;

/// One word list: entries that refuse a message, and entries that flag it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WordList {
    /// A match refuses the message.
    pub block: Vec<String>,
    /// A match stores it, flagged for review.
    pub flag: Vec<String>,
}

/// Settings, from the plugin's JSON configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Lists for every workspace.
    pub default: WordList,
    /// Extra lists per workspace id.
    pub workspaces: HashMap<String, WordList>,
    /// More links than this flags the message. Defaults to 3.
    pub max_links: usize,
    /// A character repeated this many times in a row flags the message. Defaults to 20.
    pub max_repeat: usize,
    /// Share of upper-case letters (0–1) that flags a message of 20 letters or more.
    /// Defaults to 0.8.
    pub max_upper_ratio: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default: WordList::default(),
            workspaces: HashMap::new(),
            max_links: 3,
            max_repeat: 20,
            max_upper_ratio: 0.8,
        }
    }
}

/// A configuration with its word lists normalised once, ready for many checks.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    config: Config,
    default: Compiled,
    workspaces: HashMap<String, Compiled>,
}

#[derive(Clone, Debug, Default)]
struct Compiled {
    block: Vec<(String, Vec<String>)>,
    flag: Vec<(String, Vec<String>)>,
}

impl Compiled {
    fn new(list: &WordList) -> Self {
        let compile = |entries: &[String]| {
            entries
                .iter()
                .map(|e| (e.clone(), words(e)))
                .filter(|(_, w)| !w.is_empty())
                .collect()
        };
        Self {
            block: compile(&list.block),
            flag: compile(&list.flag),
        }
    }
}

impl Rules {
    /// Parses and prepares the configuration; an empty string means the defaults.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(text).map_err(|e| format!("moderation configuration: {e}"))?
        };
        if !(0.0..=1.0).contains(&config.max_upper_ratio) {
            return Err("moderation configuration: max_upper_ratio must be between 0 and 1".into());
        }
        Ok(Self {
            default: Compiled::new(&config.default),
            workspaces: config
                .workspaces
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), Compiled::new(v)))
                .collect(),
            config,
        })
    }

    /// Decides on a message of `workspace`.
    pub fn check(&self, workspace: &str, body: &str) -> Verdict {
        let text = words(body);
        let lists = [
            Some(&self.default),
            self.workspaces.get(&workspace.to_ascii_lowercase()),
        ];
        for list in lists.into_iter().flatten() {
            if let Some((entry, _)) = list.block.iter().find(|(_, w)| contains_sequence(&text, w)) {
                return Verdict::Reject(format!("contains a blocked term ({entry})"));
            }
        }
        let mut reasons = Vec::new();
        for list in lists.into_iter().flatten() {
            for (entry, w) in &list.flag {
                if contains_sequence(&text, w) {
                    reasons.push(format!("term \"{entry}\""));
                }
            }
        }
        let links = count_links(body);
        if links > self.config.max_links {
            reasons.push(format!("{links} links"));
        }
        if longest_repeat(body) >= self.config.max_repeat {
            reasons.push("repeated characters".into());
        }
        let letters = body.chars().filter(|c| c.is_alphabetic()).count();
        let upper = body.chars().filter(|c| c.is_uppercase()).count();
        if letters >= 20 && upper as f64 / letters as f64 > self.config.max_upper_ratio {
            reasons.push("shouting".into());
        }
        if reasons.is_empty() {
            Verdict::Allow
        } else {
            Verdict::Flag(reasons.join(", "))
        }
    }
}

/// Leetspeak digits and symbols read as the letters they stand for.
fn unleet(c: char) -> char {
    match c {
        '0' => 'o',
        '1' | '!' | '|' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' | '+' => 't',
        '8' => 'b',
        '9' => 'g',
        other => other,
    }
}

/// The normalised words of a text.
fn words(text: &str) -> Vec<String> {
    let folded: String = text
        .nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut run = String::new(); // letters spelled one by one: "f r e e"
    for raw in folded.split_whitespace() {
        // Sentence punctuation around a word is not leetspeak: `money!!` is `money`.
        let raw = raw.trim_matches(|c: char| ".,;:!?\"'()[]{}…".contains(c));
        let word: String = raw
            .chars()
            .map(unleet)
            .filter(|c| c.is_alphanumeric())
            .collect();
        if word.is_empty() {
            continue;
        }
        if word.chars().count() == 1 {
            run.push_str(&word);
            continue;
        }
        if !run.is_empty() {
            out.push(std::mem::take(&mut run));
        }
        out.push(word);
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// Whether the words of `needle` appear in `text` in a row — or run together into one
/// word, as they do when spelled out letter by letter (`f r e e  m o n e y`).
fn contains_sequence(text: &[String], needle: &[String]) -> bool {
    if needle.is_empty() {
        return false;
    }
    if text.windows(needle.len()).any(|w| w == needle) {
        return true;
    }
    needle.len() > 1 && {
        let joined = needle.concat();
        text.contains(&joined)
    }
}

fn count_links(body: &str) -> usize {
    body.split_whitespace()
        .filter(|w| {
            let w = w.to_ascii_lowercase();
            w.contains("http://") || w.contains("https://") || w.starts_with("www.")
        })
        .count()
}

fn longest_repeat(body: &str) -> usize {
    let mut best = 0;
    let mut run = 0;
    let mut last = None;
    for c in body.chars() {
        if Some(c) == last && !c.is_whitespace() {
            run += 1;
        } else {
            run = 1;
            last = Some(c);
        }
        best = best.max(run);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::parse(
            r#"{
                "default": { "block": ["free money", "viagra"], "flag": ["refund"] },
                "workspaces": { "WS-1": { "block": ["competitor"] } },
                "max_links": 2
            }"#,
        )
        .unwrap()
    }

    #[test]
    fn obfuscated_spam_is_caught() {
        let r = rules();
        for spam in [
            "FREE MONEY for you",
            "f.r.e.e m0ney",
            "f r e e   m o n e y!!",
            "Frée Mónéy",
            "fr33 m0n3y",
            "get your V1AGRA",
            "v.i.a.g.r.a",
            "$$$ fr€€ ... no wait: free money",
        ] {
            assert!(
                matches!(r.check("x", spam), Verdict::Reject(_)),
                "{spam:?} got {:?}",
                r.check("x", spam)
            );
        }
    }

    #[test]
    fn innocent_text_is_left_alone() {
        let r = rules();
        for ok in [
            "Hello, I have a question about my order",
            "Is the money-back guarantee free of charge?", // words apart, not the phrase
            "our class assessment",
            "こんにちは 👋",
            "Привет! Можно вернуть заказ?",
        ] {
            assert_eq!(r.check("x", ok), Verdict::Allow, "{ok:?}");
        }
    }

    #[test]
    fn workspace_lists_add_to_the_default() {
        let r = rules();
        assert!(matches!(
            r.check("ws-1", "the competitor is cheaper"),
            Verdict::Reject(_)
        ));
        assert_eq!(r.check("ws-2", "the competitor is cheaper"), Verdict::Allow);
    }

    #[test]
    fn flags_terms_links_floods_and_shouting() {
        let r = rules();
        assert_eq!(
            r.check("x", "I want a r3fund"),
            Verdict::Flag("term \"refund\"".into())
        );
        assert_eq!(
            r.check("x", "see https://a.example http://b.example www.c.example"),
            Verdict::Flag("3 links".into())
        );
        assert_eq!(
            r.check("x", &format!("hey{}", "!".repeat(25))),
            Verdict::Flag("repeated characters".into())
        );
        assert_eq!(
            r.check("x", "WHY IS NOBODY ANSWERING MY QUESTION"),
            Verdict::Flag("shouting".into())
        );
        assert_eq!(
            r.check("x", "OK"),
            Verdict::Allow,
            "short upper case is fine"
        );
    }

    #[test]
    fn configuration_errors_are_explained() {
        assert!(Rules::parse("").is_ok());
        assert!(
            Rules::parse("{")
                .unwrap_err()
                .contains("moderation configuration")
        );
        assert!(
            Rules::parse(r#"{"blocks": []}"#).is_err(),
            "unknown keys are refused"
        );
        assert!(Rules::parse(r#"{"max_upper_ratio": 2}"#).is_err());
    }
}
