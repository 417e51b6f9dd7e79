//! Python `str` semantics that llama.cpp's naming code relies on.
//!
//! The heuristics in gguf-py are written against Python's Unicode-aware string methods
//! (`str.title`, `str.islower`, `str.split()`, `str.isdecimal`, ...). Rust's closest methods differ
//! at the edges (which characters count as whitespace, digits or letters), so the few we need
//! are re-implemented here with Python's definitions.

use regex::Regex;
use std::sync::OnceLock;

fn class(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    // The patterns are fixed literals; a failure would be a bug caught by the unit tests.
    cell.get_or_init(|| {
        Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in regex {pattern}: {e}"))
    })
}

fn matches_char(re: &Regex, c: char) -> bool {
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf))
}

/// `str.isdecimal()` for one character: Unicode general category Nd.
pub(crate) fn is_decimal(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    static RE: OnceLock<Regex> = OnceLock::new();
    matches_char(class(&RE, r"^\p{Nd}$"), c)
}

/// `str.isalpha()` for one character: Unicode general categories L* (Lu, Ll, Lt, Lm, Lo).
pub(crate) fn is_alpha(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    static RE: OnceLock<Regex> = OnceLock::new();
    matches_char(class(&RE, r"^\p{L}$"), c)
}

fn is_titlecase(c: char) -> bool {
    if c.is_ascii() {
        return false;
    }
    static RE: OnceLock<Regex> = OnceLock::new();
    matches_char(class(&RE, r"^\p{Lt}$"), c)
}

/// Python's "cased" characters: those with the Lowercase or Uppercase property, or category Lt.
fn is_cased(c: char) -> bool {
    c.is_lowercase() || c.is_uppercase() || is_titlecase(c)
}

/// `str.isspace()` for one character. Python also counts the information separators
/// U+001C..U+001F, which Rust's `char::is_whitespace` does not.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.strip()` without arguments.
pub(crate) fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// `str.split()` without arguments: split on runs of whitespace, no empty fields.
pub(crate) fn split_whitespace(s: &str) -> Vec<&str> {
    s.split(is_space).filter(|p| !p.is_empty()).collect()
}

/// `str.islower()`: at least one cased character and no uppercase or titlecase one.
pub(crate) fn is_lower(s: &str) -> bool {
    let mut cased = false;
    for c in s.chars() {
        if c.is_uppercase() || is_titlecase(c) {
            return false;
        }
        if c.is_lowercase() {
            cased = true;
        }
    }
    cased
}

/// Titlecase mapping of one character. Python uses the Unicode titlecase mapping, which equals
/// the uppercase mapping except for the Latin digraphs (and a few ligatures, not handled).
fn push_title(out: &mut String, c: char) {
    match c {
        '\u{1C4}'..='\u{1C6}' => out.push('\u{1C5}'),
        '\u{1C7}'..='\u{1C9}' => out.push('\u{1C8}'),
        '\u{1CA}'..='\u{1CC}' => out.push('\u{1CB}'),
        '\u{1F1}'..='\u{1F3}' => out.push('\u{1F2}'),
        _ => out.extend(c.to_uppercase()),
    }
}

/// `str.title()`: a character that follows a cased character is lowercased, every other
/// character is titlecased. Digits are not cased, so `"2b"` becomes `"2B"`.
pub(crate) fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut previous_cased = false;
    for c in s.chars() {
        if previous_cased {
            out.extend(c.to_lowercase());
        } else {
            push_title(&mut out, c);
        }
        previous_cased = is_cased(c);
    }
    out
}

/// `str.splitlines()` applied to text that Python read in text mode (universal newlines:
/// `\r\n` and `\r` already became `\n`). Python also breaks lines at `\v`, `\f`, U+001C..U+001E,
/// U+0085, U+2028 and U+2029.
pub(crate) fn splitlines(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let is_break = |c: char| {
        matches!(
            c,
            '\n' | '\u{b}'
                | '\u{c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        )
    };
    let mut lines: Vec<String> = normalized.split(is_break).map(str::to_owned).collect();
    // A trailing line break does not start another (empty) line.
    if normalized.ends_with(is_break) {
        lines.pop();
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_matches_python() {
        // Expected values from CPython 3.11 `str.title()`.
        assert_eq!(title("my_model"), "My_Model");
        assert_eq!(title("2b"), "2B");
        assert_eq!(title("e5a1f9c0"), "E5A1F9C0");
        assert_eq!(title("über"), "Über");
        assert_eq!(title("qwen2.5"), "Qwen2.5");
        assert_eq!(title("ǆemal"), "ǅemal");
        assert_eq!(title("hELLO wORLD"), "Hello World");
    }

    #[test]
    fn islower_matches_python() {
        assert!(is_lower("gemma"));
        assert!(is_lower("qwen2.5"));
        assert!(!is_lower("2"));
        assert!(!is_lower("SmolLM2"));
        assert!(!is_lower(""));
        assert!(is_lower("über"));
    }

    #[test]
    fn whitespace_and_lines_match_python() {
        assert_eq!(strip("\u{1f} a b \u{3000}"), "a b");
        assert_eq!(
            split_whitespace("  a  b\tc\u{1c}d "),
            vec!["a", "b", "c", "d"]
        );
        assert_eq!(splitlines("a\r\nb\rc\u{85}d\n"), vec!["a", "b", "c", "d"]);
        assert_eq!(splitlines("a\n\nb"), vec!["a", "", "b"]);
        assert!(splitlines("").is_empty());
        assert_eq!(splitlines("\n"), vec![""]);
    }

    #[test]
    fn character_classes_match_python() {
        assert!(is_decimal('7'));
        assert!(is_decimal('٣')); // ARABIC-INDIC DIGIT THREE: isdecimal() is True
        assert!(!is_decimal('²')); // SUPERSCRIPT TWO: isdigit() but not isdecimal()
        assert!(is_alpha('é'));
        assert!(!is_alpha('_'));
        assert!(!is_alpha('1'));
    }
}
