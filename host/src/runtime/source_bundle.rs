//! Projection source carried inside a component: how interpreted plugins
//! reach the dev loop in milliseconds.
//!
//! Building a Python component takes componentize-py seconds, on every
//! save. `refract dev` instead builds an interpreter component once (the
//! `interpreted` world) and, on each save, appends the project's source
//! files to a copy of it as one custom section, [`SECTION`]. Loading such a
//! file splits it here:
//!
//! - its **code** is the file without the section, so every edit of a
//!   project reuses the interpreter's compiled code from the module cache;
//! - its **identity** (the module hash, and so the generation) is the whole
//!   file, so an edit is a new generation, rebuilt from position 0;
//! - its **files** are handed to each instance by the
//!   `refract:projection/source` import, and the interpreter runs them.
//!
//! The section's body is JSON: an array of `[path, text]` pairs.

use std::borrow::Cow;

/// Name of the custom section holding a project's source files.
pub const SECTION: &str = "refract:source";

/// Most files one section may hold, and the longest path: a dev project is
/// a handful of files, and a file of thousands is no project.
pub const MAX_FILES: usize = 1_000;
const MAX_PATH: usize = 512;

/// Source files as (relative path, text) pairs, sorted by path.
pub type SourceFiles = Vec<(String, String)>;

/// `component` with `files` appended as a [`SECTION`] custom section.
/// Paths are sorted, so the same files always give the same bytes (and the
/// same module hash).
pub fn with_source(component: &[u8], files: &[(String, String)]) -> Vec<u8> {
    let mut files = files.to_vec();
    files.sort();
    let body = serde_json::to_vec(&files).expect("strings serialize");
    let mut content = Vec::with_capacity(body.len() + SECTION.len() + 5);
    leb128(&mut content, SECTION.len());
    content.extend_from_slice(SECTION.as_bytes());
    content.extend_from_slice(&body);
    let mut out = Vec::with_capacity(component.len() + content.len() + 6);
    out.extend_from_slice(component);
    out.push(0); // custom section
    leb128(&mut out, content.len());
    out.extend_from_slice(&content);
    out
}

/// Splits a component into its code and the source files of its
/// [`SECTION`], if it has one at its top level. A component without one is
/// all code, with no files. Err names what is wrong with a section that is
/// there: the file is then refused, not run without its source.
pub(crate) fn split(bytes: &[u8]) -> Result<(Cow<'_, [u8]>, SourceFiles), String> {
    let mut found = None;
    for (id, range, body) in sections(bytes) {
        let named = read_leb128(body).and_then(|(n, b)| b.split_at_checked(n as usize));
        if let (0, Some((name, content))) = (id, named)
            && name == SECTION.as_bytes()
        {
            if found.is_some() {
                return Err(format!("more than one `{SECTION}` section"));
            }
            found = Some((range, content));
        }
    }
    let Some((range, content)) = found else { return Ok((Cow::Borrowed(bytes), Vec::new())) };
    let files = parse(content)?;
    let code = if range.end == bytes.len() {
        Cow::Borrowed(&bytes[..range.start])
    } else {
        Cow::Owned([&bytes[..range.start], &bytes[range.end..]].concat())
    };
    Ok((code, files))
}

/// The files of a section's body, checked.
fn parse(content: &[u8]) -> Result<SourceFiles, String> {
    let mut files: SourceFiles = serde_json::from_slice(content)
        .map_err(|e| format!("`{SECTION}` section is not a JSON array of [path, text] pairs: {e}"))?;
    if files.len() > MAX_FILES {
        return Err(format!("`{SECTION}` section holds {} files, more than {MAX_FILES}", files.len()));
    }
    // By path alone: the texts need no comparing, and duplicates are refused below.
    files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (path, _) in &files {
        let relative = !path.is_empty()
            && path.len() <= MAX_PATH
            && !path.starts_with('/')
            && !path.contains('\\')
            && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
        if !relative {
            return Err(format!(
                "`{SECTION}` section: {path:?} is not a relative path of 1 to {MAX_PATH} bytes with `/` separators"
            ));
        }
    }
    if let Some(pair) = files.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(format!("`{SECTION}` section names {:?} twice", pair[0].0));
    }
    Ok(files)
}

fn leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The top-level sections of a component (or core module) in `bytes`:
/// each one's id, its byte range in `bytes` (header included) and its body.
/// Reads only section headers, and stops at bytes that do not parse: the
/// compiler refuses those with its own message.
pub(crate) fn sections(bytes: &[u8]) -> impl Iterator<Item = (u8, std::ops::Range<usize>, &[u8])> {
    let mut rest = bytes.get(8..).unwrap_or_default();
    std::iter::from_fn(move || {
        let start = bytes.len() - rest.len();
        let (&id, after) = rest.split_first()?;
        let (len, after) = read_leb128(after)?;
        let (body, after) = after.split_at_checked(len as usize)?;
        rest = after;
        Some((id, start..bytes.len() - rest.len(), body))
    })
}

/// An unsigned LEB128 `u32` and what follows it.
fn read_leb128(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value = 0u32;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty component: the header alone.
    const EMPTY: &[u8] = &[0, b'a', b's', b'm', 0x0d, 0, 1, 0];

    fn files(pairs: &[(&str, &str)]) -> SourceFiles {
        pairs.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect()
    }

    #[test]
    fn a_bundle_splits_back_into_the_same_code_and_sorted_files() {
        let given = files(&[("pkg/util.py", "X = 1\n"), ("app.py", "import pkg.util\n")]);
        let bundled = with_source(EMPTY, &given);
        let (code, got) = split(&bundled).unwrap();
        assert_eq!(&*code, EMPTY);
        assert_eq!(got, files(&[("app.py", "import pkg.util\n"), ("pkg/util.py", "X = 1\n")]));
        // The order files were given in does not change the bytes.
        let mut reversed = given.clone();
        reversed.reverse();
        assert_eq!(with_source(EMPTY, &reversed), bundled);
        // A large body takes a multi-byte length.
        let big = files(&[("app.py", &"#".repeat(100_000))]);
        assert_eq!(split(&with_source(EMPTY, &big)).unwrap().1, big);
    }

    #[test]
    fn a_component_without_the_section_is_all_code() {
        let (code, got) = split(EMPTY).unwrap();
        assert!(matches!(code, Cow::Borrowed(c) if c == EMPTY));
        assert!(got.is_empty());
        // Another custom section is code too.
        let mut other = EMPTY.to_vec();
        other.extend_from_slice(&[0, 3, 2, b'h', b'i']);
        assert_eq!(split(&other).unwrap(), (Cow::Borrowed(&other[..]), Vec::new()));
        // Bytes that are not sections are left for the compiler to refuse.
        assert_eq!(split(b"junk").unwrap().1, Vec::new());
    }

    #[test]
    fn a_section_before_other_sections_is_cut_out_of_the_code() {
        let bundled = with_source(EMPTY, &files(&[("app.py", "")]));
        let mut code = bundled.clone();
        let trailer = [0u8, 3, 2, b'h', b'i'];
        code.extend_from_slice(&trailer);
        let (split_code, _) = split(&code).unwrap();
        assert_eq!(&*split_code, [EMPTY, &trailer[..]].concat());
    }

    #[test]
    fn bad_sections_are_refused_by_what_is_wrong() {
        let raw = |body: &[u8]| {
            let mut content = Vec::new();
            leb128(&mut content, SECTION.len());
            content.extend_from_slice(SECTION.as_bytes());
            content.extend_from_slice(body);
            let mut out = EMPTY.to_vec();
            out.push(0);
            leb128(&mut out, content.len());
            out.extend_from_slice(&content);
            out
        };
        let e = split(&raw(b"{}")).unwrap_err();
        assert!(e.contains("not a JSON array"), "{e}");
        for bad in ["", "/etc/passwd", "../app.py", "a/../b.py", "a//b.py", "a\\\\b.py", "./app.py"] {
            let e = split(&raw(format!(r#"[["{bad}", ""]]"#).as_bytes())).unwrap_err();
            assert!(e.contains("is not a relative path"), "{bad}: {e}");
        }
        let e = split(&raw(br#"[["app.py", "a"], ["app.py", "b"]]"#)).unwrap_err();
        assert!(e.contains("names \"app.py\" twice"), "{e}");
        let twice = with_source(&with_source(EMPTY, &files(&[("a.py", "")])), &files(&[("b.py", "")]));
        assert!(split(&twice).unwrap_err().contains("more than one"));
    }
}
