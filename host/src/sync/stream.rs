//! Stream names of synced rows: `<source>-<key>`.
//!
//! The key part is unambiguous by construction: each key column's value
//! (integers in decimal, text as is) has `%`, `,` and control characters
//! percent-encoded (`%25`, `%2C`, `%0A`, byte by byte in UTF-8), and the
//! columns of a composite key are joined with `,`. So `orders-42`,
//! `lines-42,7` and `notes-a%2Cb` (the single key `a,b`) can only come from
//! one key each. Source names have no `-` (see `config.rs`), so no source's
//! streams start with another source's prefix.

use super::value::Val;

/// The stream of the row with `key` in `source`.
pub fn stream_id(source: &str, key: &[Val]) -> String {
    format!("{source}-{}", encode_key(key))
}

/// The key part of a stream name.
pub fn encode_key(key: &[Val]) -> String {
    let mut out = String::new();
    for (i, v) in key.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for c in v.text().chars() {
            if c == '%' || c == ',' || c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            } else {
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unambiguous() {
        let t = |s: &str| Val::Text(s.into());
        assert_eq!(stream_id("orders", &[Val::Int(42)]), "orders-42");
        assert_eq!(stream_id("lines", &[Val::Int(42), t("x")]), "lines-42,x");
        assert_eq!(stream_id("notes", &[t("a,b")]), "notes-a%2Cb");
        assert_ne!(encode_key(&[t("a,b")]), encode_key(&[t("a"), t("b")]));
        assert_eq!(encode_key(&[t("100%\n\u{85}")]), "100%25%0A%C2%85");
        assert_eq!(encode_key(&[t("zürich-1 ✓")]), "zürich-1 ✓");
        assert_eq!(encode_key(&[t("%2C")]), "%252C");
    }
}
