//! Blocks of the documentation that a test runs: found by their first line, so that the page
//! stays the one place they are written.

use std::fs;
use std::path::Path;

/// The body of the fenced block of `page` (relative to the repository root) whose first line
/// is `first_line`; panics when there is none or more than one.
pub fn doc_block(page: &str, first_line: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = fs::read_to_string(root.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
    let mut found = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if !line.trim_start().starts_with("```") {
            continue;
        }
        let mut body = Vec::new();
        for l in lines.by_ref() {
            if l.trim_start().starts_with("```") {
                break;
            }
            body.push(l);
        }
        if body.first().map(|l| l.trim_end()) == Some(first_line) {
            found.push(body.join("\n") + "\n");
        }
    }
    assert_eq!(
        found.len(),
        1,
        "{page}: expected one fenced block starting with {first_line:?}, found {}",
        found.len()
    );
    found.remove(0)
}
