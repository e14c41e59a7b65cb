//! Stream ids as NATS subject tokens, unambiguous by construction.
//!
//! A subject token may not be empty or hold `.`, `*`, `>` or whitespace,
//! and some characters are awkward in tools. Letters, digits, `-` and `_`
//! stay as they are; every other byte of the id's UTF-8, `~` included,
//! becomes `~` and two upper-case hex digits. Different ids therefore get
//! different tokens, and [`decode`] gives the id back exactly.

/// The subject token of a stream id.
pub(crate) fn encode(stream_id: &str) -> String {
    let mut token = String::with_capacity(stream_id.len());
    for b in stream_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            token.push(b as char);
        } else {
            token.push_str(&format!("~{b:02X}"));
        }
    }
    token
}

/// The stream id of a token [`encode`] made; `None` for any other token.
pub(crate) fn decode(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'~' => {
                let hex = token.get(i + 1..i + 3)?;
                if hex.bytes().any(|c| c.is_ascii_lowercase()) {
                    return None;
                }
                let b = u8::from_str_radix(hex, 16).ok()?;
                // Only bytes `encode` escapes may come escaped: one spelling per id.
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                    return None;
                }
                out.push(b);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_collide() {
        let ids = ["acc-1", "acc.1", "acc~2E1", "a b", "a*b", "a>b", "zürich ✓", "~", "_", "A_b-9", "a~7E"];
        let mut tokens = std::collections::BTreeSet::new();
        for id in ids {
            let token = encode(id);
            assert!(!token.is_empty());
            assert!(!token.contains(['.', '*', '>', ' ', '\t']), "{token}");
            assert_eq!(decode(&token).as_deref(), Some(id), "{token}");
            assert!(tokens.insert(token), "{id} collides");
        }
        assert_eq!(encode("acc.1"), "acc~2E1");
        assert_eq!(encode("acc~2E1"), "acc~7E2E1");
    }

    #[test]
    fn foreign_spellings_are_not_ids() {
        for token in ["a~2e1", "a~41", "a~", "a~4", "a.b", "~FF"] {
            assert_eq!(decode(token), None, "{token}");
        }
    }
}
