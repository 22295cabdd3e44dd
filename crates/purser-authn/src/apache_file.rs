//! The rules Apache's htpasswd and htgroup files share: the bounds, reading, and which lines
//! count (`#` comments and blank lines do not; `\r\n` ends a line too; a NUL byte refuses the
//! whole file, which looks truncated or binary).

use std::path::Path;

use purser_fs::ReadError;

/// Largest htpasswd or htgroup file accepted.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Most lines accepted in an htpasswd or htgroup file.
pub const MAX_LINES: usize = 1_000_000;

/// A file refused as a whole for a reason both formats share; the holder keeps the last good
/// version.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Not read: missing, not a regular file, over [`MAX_FILE_BYTES`], or not UTF-8.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Text handed to a parser directly that is over [`MAX_FILE_BYTES`].
    #[error("{source_name}: the file is larger than {limit} bytes; split it or use LDAP")]
    TooLarge { source_name: String, limit: u64 },
    #[error("{source_name}: the file has more than {limit} lines; split it or use LDAP")]
    TooManyLines { source_name: String, limit: usize },
    #[error(
        "{source_name}:{line}: the line contains a NUL byte; the file looks truncated or binary"
    )]
    NulByte { source_name: String, line: usize },
}

/// Reads an htpasswd or htgroup file, within [`MAX_FILE_BYTES`].
pub(crate) fn read(path: &Path) -> Result<String, FileError> {
    Ok(purser_fs::read_text(path, MAX_FILE_BYTES)?)
}

/// The meaningful lines of a file: `(1-based number, text)`, without comments, blank lines and
/// line-end `\r`; fails on the bounds and on NUL bytes.
pub(crate) fn content_lines<'a>(
    text: &'a str,
    source: &str,
) -> Result<Vec<(usize, &'a str)>, FileError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::TooLarge {
            source_name: source.to_owned(),
            limit: MAX_FILE_BYTES,
        });
    }
    if let Some(pos) = text.find('\0') {
        return Err(FileError::NulByte {
            source_name: source.to_owned(),
            line: text[..pos].matches('\n').count() + 1,
        });
    }
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let number = i + 1;
        if number > MAX_LINES {
            // A final empty piece after the last newline is not a line.
            if raw.is_empty() && number == MAX_LINES + 1 && text.ends_with('\n') {
                break;
            }
            return Err(FileError::TooManyLines {
                source_name: source.to_owned(),
                limit: MAX_LINES,
            });
        }
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        out.push((number, line));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blank_lines_and_crlf() {
        let lines = content_lines("# c\n\n  # indented\na:b\r\n \t\nc:d", "f").unwrap();
        assert_eq!(lines, [(4, "a:b"), (6, "c:d")]);
    }

    #[test]
    fn a_nul_byte_names_its_line() {
        let err = content_lines("a\nb\nc\0\n", "f").unwrap_err();
        assert_eq!(
            err.to_string(),
            "f:3: the line contains a NUL byte; the file looks truncated or binary"
        );
    }

    #[test]
    fn the_line_bound_counts_a_final_newline_as_no_line() {
        let text = "#\n".repeat(MAX_LINES);
        assert!(content_lines(&text, "f").is_ok());
        let err = content_lines(&format!("{text}#"), "f").unwrap_err();
        assert!(matches!(err, FileError::TooManyLines { .. }), "{err}");
    }
}
