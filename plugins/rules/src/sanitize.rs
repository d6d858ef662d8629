//! Plain-text sanitizing: message bodies are shown as text, so markup is removed —
//! not entity-encoded — and ordinary text such as `a < b > c`, `Tom & Jerry` or `<3`
//! stays exactly as written.
//!
//! Removed: HTML tags and comments, and the remains of unclosed tags with attributes;
//! `<script>`/`<style>` elements with their content; `javascript:`, `vbscript:` and
//! `data:` URLs wherever they start; control characters (but newline and tab)
//! and bidirectional overrides. Then the text is normalised to NFC and cut to the length
//! limit. Emoji (joiners included) and every script are left alone.

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

use crate::Verdict;

/// Settings, from the plugin's JSON configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Longest body kept, in characters. Defaults to 4000.
    pub max_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { max_chars: 4000 }
    }
}

impl Config {
    /// Parses the configuration; an empty string means the defaults.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(text).map_err(|e| format!("sanitize configuration: {e}"))
    }
}

/// How many rounds of stripping a body may need. Each round removes what the one
/// before exposed; honest text needs one or two.
const MAX_ROUNDS: usize = 8;

/// Sanitizes `body`: `Allow` if nothing changes, `Rewrite` if something does, and
/// `Reject` for markup nested so deep that stripping does not settle.
pub fn check(config: &Config, body: &str) -> Verdict {
    match sanitize(config, body) {
        Some(clean) if clean == body => Verdict::Allow,
        Some(clean) => Verdict::Rewrite(clean),
        None => Verdict::Reject("markup nested too deeply".into()),
    }
}

/// The sanitized text, or `None` when stripping does not settle within the bound.
pub fn sanitize(config: &Config, body: &str) -> Option<String> {
    let text = strip_settled(strip_controls(body))?;
    match text.char_indices().nth(config.max_chars) {
        None => Some(text),
        // The cut can leave the start of a tag at the end (`<script` of `<script!`),
        // so what is kept is stripped again.
        Some((cut, _)) => strip_settled(text[..cut].to_owned()),
    }
}

/// Markup and dangerous URLs stripped until nothing changes, then NFC; `None` when that
/// takes more than [`MAX_ROUNDS`].
fn strip_settled(mut text: String) -> Option<String> {
    // Removing one tag or URL can join the text around it into a new one
    // (`<scr<b>ipt>`), so strip until nothing changes.
    for _ in 0..MAX_ROUNDS {
        let next = strip_dangerous_urls(&strip_markup(&text));
        if next == text {
            return Some(text.nfc().collect());
        }
        text = next;
    }
    None
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

fn strip_controls(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            c == '\n' || c == '\t' || !(c.is_control() || is_bidi_control(c) || c == '\u{FEFF}')
        })
        .collect()
}

/// Elements whose content is code, not text: removed whole.
const RAW_ELEMENTS: [&str; 6] = ["script", "style", "iframe", "object", "embed", "template"];

/// If a tag starts at `rest` (which begins with `<`), its length and its name.
fn tag_at(rest: &str) -> Option<(usize, String)> {
    let bytes = rest.as_bytes();
    if rest.starts_with("<!--") {
        return Some((
            rest.find("-->").map_or(rest.len(), |end| end + 3),
            String::new(),
        ));
    }
    let mut i = 1;
    if bytes.get(i) == Some(&b'/') || bytes.get(i) == Some(&b'!') || bytes.get(i) == Some(&b'?') {
        i += 1;
    }
    // A tag name starts with a letter right after `<`: `a < b` and `<3` are text.
    if !bytes.get(i).is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    let name_start = i;
    while bytes
        .get(i)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b':')
    {
        i += 1;
    }
    let name = rest[name_start..i].to_ascii_lowercase();
    // Attributes up to the closing `>`, respecting quotes; a `<` before it means this
    // was not a tag after all.
    let mut quote = None;
    while let Some(&b) = bytes.get(i) {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'>') => return Some((i + 1, name)),
            (None, b'<') => return None,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether `rest` starts with `<script` (or another raw element) as a whole tag name:
/// as in HTML, the name ends at whitespace, `/`, `>` or the end of the text.
fn opens_raw_element(rest: &str) -> bool {
    let lower = rest.get(1..).unwrap_or_default().to_ascii_lowercase();
    RAW_ELEMENTS.iter().any(|name| {
        lower.strip_prefix(name).is_some_and(|after| {
            after.is_empty()
                || after.starts_with(|c: char| c.is_whitespace() || c == '/' || c == '>')
        })
    })
}

/// If the remains of a start tag with an attribute value, never closed, start at `rest`
/// (which begins with `<`): `<img src=x onerror=alert(1)` to the end, or up to a `<`
/// outside quotes. Their length. A page that shows the body as HTML would read on into
/// its own markup after it, close the tag there and run the attributes; `x<y` and
/// `if a<b then` give no attribute a value and stay text.
fn unclosed_tag_len(rest: &str) -> Option<usize> {
    let bytes = rest.as_bytes();
    let mut i = 1;
    if !bytes.get(i).is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    while bytes
        .get(i)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b':')
    {
        i += 1;
    }
    // As in HTML, attributes follow the name after whitespace or `/` (`<svg/onload=`).
    if !bytes
        .get(i)
        .is_some_and(|b| b.is_ascii_whitespace() || *b == b'/')
    {
        return None;
    }
    let mut quote = None;
    let mut has_value = false;
    while let Some(&b) = bytes.get(i) {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'=') => has_value = true,
            (None, b'<') => break,
            _ => {}
        }
        i += 1;
    }
    has_value.then_some(i)
}

fn strip_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('<') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        match tag_at(rest) {
            Some((len, name)) => {
                let closing = rest.as_bytes().get(1) == Some(&b'/');
                rest = &rest[len..];
                if !closing && RAW_ELEMENTS.contains(&name.as_str()) {
                    // Skip the content up to the matching close tag (or to the end).
                    let lower = rest.to_ascii_lowercase();
                    let close = format!("</{name}");
                    rest = match lower.find(&close) {
                        Some(end) => {
                            let after = &rest[end..];
                            after.find('>').map_or("", |gt| &after[gt + 1..])
                        }
                        None => "",
                    };
                }
            }
            // An element of code that never closes its tag (`<script src=x` to the
            // end) is dropped with everything after it, as a browser would swallow it.
            None if opens_raw_element(rest) => rest = "",
            None => match unclosed_tag_len(rest) {
                Some(len) => rest = &rest[len..],
                None => {
                    out.push('<');
                    rest = &rest[1..];
                }
            },
        }
    }
    out.push_str(rest);
    out
}

/// Schemes that run code when a URL is opened.
const DANGEROUS_SCHEMES: [&str; 3] = ["javascript:", "vbscript:", "data:"];

/// Removes every dangerous URL, from its scheme to the next whitespace, wherever it
/// starts: at the start of a word, after `=` or a quote (`x=javascript:…`,
/// `src="javascript:…`), in what is left of a tag. A scheme only starts where URL
/// schemes can — not right after an ASCII letter or digit — so `metadata: 3 rows`
/// stays text. Browsers drop tabs and newlines inside a URL and decode character
/// references in attributes, so the scheme is read through whitespace and references
/// (`java\tscript:`, `java&#x09;script:`, `&#106;avascript:`, `javascript&colon;`).
fn strip_dangerous_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        let may_start = !prev.is_some_and(|p| p.is_ascii_alphanumeric());
        if let Some(scheme) = may_start.then(|| dangerous_scheme_at(rest)).flatten() {
            // `prev` stays: the URL ends at whitespace or at the end of the text, so
            // whatever comes next is not glued to it.
            let end = rest[scheme..]
                .find(char::is_whitespace)
                .map_or(rest.len(), |e| scheme + e);
            rest = &rest[end..];
            continue;
        }
        out.push(c);
        prev = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// If a dangerous scheme, colon included, starts `text`: its length in `text`.
fn dangerous_scheme_at(text: &str) -> Option<usize> {
    DANGEROUS_SCHEMES.iter().find_map(|scheme| {
        let mut len = 0;
        for (n, want) in scheme.chars().enumerate() {
            loop {
                let (c, size) = char_as_read(&text[len..])?;
                len += size;
                // Whitespace splits a scheme (`java\tscript:`), but does not start one.
                if n > 0 && c.is_whitespace() {
                    continue;
                }
                if c.to_ascii_lowercase() != want {
                    return None;
                }
                break;
            }
        }
        Some(len)
    })
}

/// The first character of `text` as a browser reads it in an attribute — a character
/// reference decoded — and how many bytes it takes.
fn char_as_read(text: &str) -> Option<(char, usize)> {
    let c = text.chars().next()?;
    Some(
        (c == '&')
            .then(|| char_reference(text))
            .flatten()
            .unwrap_or((c, c.len_utf8())),
    )
}

/// A character reference at the start of `text`: numeric (`&#106;`, `&#x6A;`, the
/// `;` optional as browsers allow) or one of the named ones that spell a scheme's
/// parts, with its length.
fn char_reference(text: &str) -> Option<(char, usize)> {
    const NAMED: [(&str, char); 3] = [("&colon;", ':'), ("&Tab;", '\t'), ("&NewLine;", '\n')];
    if let Some((name, c)) = NAMED.iter().find(|(name, _)| text.starts_with(name)) {
        return Some((*c, name.len()));
    }
    let digits = text.strip_prefix("&#")?;
    let (radix, digits, prefix) = match digits.strip_prefix(['x', 'X']) {
        Some(hex) => (16, hex, 3),
        None => (10, digits, 2),
    };
    let count = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if count == 0 {
        return None;
    }
    // Saturating: `&#00000000106;` is `j`, and an endless number is no character.
    let value = digits[..count].chars().fold(0u32, |v, d| {
        v.saturating_mul(radix)
            .saturating_add(d.to_digit(radix).unwrap_or(0))
    });
    let semicolon = usize::from(digits[count..].starts_with(';'));
    Some((char::from_u32(value)?, prefix + count + semicolon))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        sanitize(&Config::default(), s).expect("settles")
    }

    #[test]
    fn ordinary_text_stays_as_written() {
        for text in [
            "a < b > c",
            "Tom & Jerry",
            "I <3 you",
            "5 > 3 and 2 < 4",
            "x<y",
            "&lt;b&gt; is how you write <b>", // the entity text stays text
            "Привет, мир",
            "مرحبا بالعالم",
            "こんにちは世界",
            "👍🏽 👨‍👩‍👧‍👦 🇫🇷",
            "line one\nline two\ttabbed",
        ] {
            let expected = if text.ends_with("<b>") {
                "&lt;b&gt; is how you write "
            } else {
                text
            };
            assert_eq!(clean(text), expected, "{text:?}");
        }
    }

    /// Payloads from the OWASP XSS filter evasion cheat sheet, and what is left of them.
    #[test]
    fn owasp_payloads_lose_their_markup_and_script() {
        let table = [
            ("<script>alert('XSS')</script>hello", "hello"),
            (
                "<SCRIPT SRC=https://cdn.jsdelivr.net/gh/Moksh45/host-xss.rocks/index.js></SCRIPT>",
                "",
            ),
            ("<IMG SRC=\"javascript:alert('XSS');\">", ""),
            ("<img src=x onerror=alert(1)>pic", "pic"),
            ("<svg/onload=alert('XSS')>", ""),
            ("<BODY ONLOAD=alert('XSS')>text", "text"),
            ("<a href=\"javascript:alert(1)\">click</a>", "click"),
            (
                "<iframe src=\"https://evil.example\"></iframe>after",
                "after",
            ),
            ("<scr<script>ipt>alert(1)</script>", "<scr"),
            ("hello <script src=https://evil.example/x.js", "hello "),
            ("<scr<scriptipt!a", "<scr<scriptipt!a"),
            ("<<SCRIPT>alert(\"XSS\");//\\<</SCRIPT>", "<"),
            (
                "<STYLE>li {list-style-image: url(\"javascript:alert('XSS')\");}</STYLE>ok",
                "ok",
            ),
            ("<!-- hidden --> visible", " visible"),
            (
                "<div style=\"width: expression(alert('XSS'));\">x</div>",
                "x",
            ),
            ("open javascript:alert(document.cookie) now", "open  now"),
            ("see java\tscript:alert(1)", "see "),
            (
                "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
                "",
            ),
            ("<IMG \"\"\"><SCRIPT>alert(\"XSS\")</SCRIPT>\"\\>", ""),
            // A scheme that does not start a word, and tags left unclosed.
            ("<IMG SRC=\"javascript:alert(1)\"", ""),
            ("<IMG SRC=javascript:alert('XSS')", ""),
            ("hi <img src=x onerror=alert(1)", "hi "),
            ("<svg/onload=alert(1) <b>bold</b>", "bold"),
            ("<IMG SRC=\"javascript:alert(1)\" <b>x", "x"),
            ("x=javascript:alert(1)", "x="),
            ("x=JaVaScRiPt:alert(1) y", "x= y"),
            ("href='vbscript:msgbox(1)'", "href='"),
            ("src:data:text/html,PHNjcmlwdD4=", "src:"),
            ("(javascript:alert(1))", "("),
            ("x=java\tscript:alert(1)", "x="),
            ("x=java&#x09;script:alert(1)", "x="),
            ("x=java&Tab;script:alert(1)", "x="),
            ("x=javascript&colon;alert(1)", "x="),
            (
                "&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)",
                "",
            ),
            ("go &#0000106&#0000097vascript:alert(1)", "go "),
            ("go=&#x6A&#x61vascript:alert(1)", "go="),
            // Ordinary text that looks a little like the above stays as written.
            ("see https://example.com", "see https://example.com"),
            ("a:b", "a:b"),
            ("javascript is fun", "javascript is fun"),
            ("x=javascript", "x=javascript"),
            ("metadata: 3 rows", "metadata: 3 rows"),
            ("if a<b then c", "if a<b then c"),
            ("x<y", "x<y"),
            ("Tom &amp; Jerry &#9731;", "Tom &amp; Jerry &#9731;"),
        ];
        for (input, expected) in table {
            assert_eq!(clean(input), expected, "{input:?}");
        }
    }

    #[test]
    fn controls_and_bidi_overrides_are_removed_and_text_is_nfc() {
        assert_eq!(clean("bell\u{7}"), "bell");
        assert_eq!(clean("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        assert_eq!(clean("\u{FEFF}start"), "start");
        // e + combining acute → é
        assert_eq!(clean("cafe\u{301}"), "caf\u{e9}");
    }

    #[test]
    fn length_is_enforced_on_characters() {
        let config = Config { max_chars: 5 };
        assert_eq!(sanitize(&config, "héllo world").unwrap(), "héllo");
        assert_eq!(sanitize(&config, "👍👍👍👍👍👍").unwrap(), "👍👍👍👍👍");
        // What the cut leaves is sanitized too: `<script!` is a harmless name, its first
        // seven characters are not.
        let config = Config { max_chars: 10 };
        assert_eq!(sanitize(&config, "hi <script! now").unwrap(), "hi ");
    }

    #[test]
    fn verdicts() {
        let c = Config::default();
        assert_eq!(check(&c, "hello"), Verdict::Allow);
        assert_eq!(check(&c, "<b>hi</b>"), Verdict::Rewrite("hi".into()));
        let nested = format!("{}{}", "<b".repeat(12), ">".repeat(12)); // 12 rounds to settle
        assert!(
            matches!(check(&c, &nested), Verdict::Reject(_)),
            "{:?}",
            check(&c, &nested)
        );
        assert_eq!(Config::parse(""), Ok(Config::default()));
        assert_eq!(
            Config::parse(r#"{"max_chars": 10}"#),
            Ok(Config { max_chars: 10 })
        );
        assert!(Config::parse(r#"{"max_chars": "x"}"#).is_err());
    }
}
