//! Optional text clean-up applied while reading a table.

use unicode_normalization::UnicodeNormalization;

/// What [`CleanOptions::clean`] does; the default does nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanOptions {
    /// Remove HTML tags (`<br />` etc., as in scraped reviews) and unescape the basic
    /// entities `&amp; &lt; &gt; &quot; &#39; &apos; &nbsp;` and numeric `&#NN;` / `&#xHH;`.
    pub strip_html: bool,
    /// Collapse every whitespace run to one space and trim both ends.
    pub normalize_whitespace: bool,
    /// Unicode NFC, so composed and decomposed accents tokenize the same.
    pub unicode_nfc: bool,
}

impl CleanOptions {
    /// Everything on.
    pub fn all() -> Self {
        CleanOptions {
            strip_html: true,
            normalize_whitespace: true,
            unicode_nfc: true,
        }
    }

    /// Applies the enabled steps: HTML, then NFC, then whitespace.
    pub fn clean(&self, text: &str) -> String {
        let mut out = if self.strip_html {
            unescape_entities(&strip_tags(text))
        } else {
            text.to_owned()
        };
        if self.unicode_nfc {
            out = out.nfc().collect();
        }
        if self.normalize_whitespace {
            out = out.split_whitespace().collect::<Vec<_>>().join(" ");
        }
        out
    }
}

/// Tags that separate words become a space (`a<br/>b` is two words); inline tags vanish
/// (`<b>bold</b>er` stays one word). A `<` that does not start a tag (`3 < 5`) is kept.
fn strip_tags(text: &str) -> String {
    const BREAKING: &[&str] = &[
        "br",
        "p",
        "div",
        "li",
        "ul",
        "ol",
        "tr",
        "td",
        "th",
        "table",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "blockquote",
        "pre",
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('<') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let starts_tag = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
        match after.find('>') {
            Some(end) if starts_tag => {
                let name: String = after[..end]
                    .trim_start_matches(['/', '!'])
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
                    .to_ascii_lowercase();
                if BREAKING.contains(&name.as_str()) {
                    out.push(' ');
                }
                rest = &after[end + 1..];
            }
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn unescape_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        // Entities are short; a bare `&` ("Q&A") is left alone.
        let decoded = after.find(';').filter(|&end| end <= 10).and_then(|end| {
            let name = &after[..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
