//! The file `--write` writes: the run's report in place of the one before,
//! and the part of the file written by hand kept as it was. In
//! BENCHMARKS.md that part begins at [`HAND_WRITTEN`] and runs to the end.
//! A section measured alone ([`write_section`]) replaces only its own
//! figures, and the other sections keep the full run's.

use std::path::Path;

/// The heading from which a report file is written by hand.
pub const HAND_WRITTEN: &str = "## Reading these figures (written by hand";

/// Writes `report` to `path`, followed by the hand-written part of what
/// `path` held, if any.
pub fn write(path: &Path, report: &str) -> std::io::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(old) => old,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    std::fs::write(path, joined(report, &old))
}

/// Writes `section`, which begins with the level-2 heading `heading`, to
/// `path` in place of the section of that heading, keeping the rest of the
/// file: a section measured alone replaces only its own figures. Without
/// such a section, `section` is added at the end of the written part.
pub fn write_section(path: &Path, heading: &str, section: &str) -> std::io::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(old) => old,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    std::fs::write(path, with_section(&old, heading, section))
}

/// `report`, then `old` from its hand-written heading on (a heading at
/// the start of a line), one blank line between.
fn joined(report: &str, old: &str) -> String {
    match line_starting(old, HAND_WRITTEN, 0) {
        Some(at) => format!("{}\n\n{}", report.trim_end(), &old[at..]),
        None => report.to_owned(),
    }
}

/// `old` with its section under `heading` (up to the next level-2 heading
/// or the hand-written part) replaced by `section`.
fn with_section(old: &str, heading: &str, section: &str) -> String {
    let hand_written = line_starting(old, HAND_WRITTEN, 0).unwrap_or(old.len());
    let (written, rest) = old.split_at(hand_written);
    let (before, after) = match line_starting(written, heading, 0) {
        Some(start) => {
            let end = line_starting(written, "## ", start + heading.len()).unwrap_or(written.len());
            (&written[..start], &written[end..])
        }
        None => (written, ""),
    };
    let mut out = String::new();
    for part in [before, section, after, rest] {
        if !part.trim().is_empty() {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(part.trim_end());
        }
    }
    out.push('\n');
    out
}

/// Where the first line of `text` that begins with `prefix` starts, at or
/// after `from`.
fn line_starting(text: &str, prefix: &str, from: usize) -> Option<usize> {
    if from == 0 && text.starts_with(prefix) {
        return Some(0);
    }
    text[from..]
        .find(&format!("\n{prefix}"))
        .map(|at| from + at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_written_part_outlives_a_new_report() {
        let old = format!("# Benchmarks\n\nold figures\n\n{HAND_WRITTEN}; ...)\n\nnotes\n");
        let new = joined("# Benchmarks\n\nnew figures\n", &old);
        assert_eq!(
            new,
            format!("# Benchmarks\n\nnew figures\n\n{HAND_WRITTEN}; ...)\n\nnotes\n")
        );
    }

    #[test]
    fn a_file_without_one_is_replaced_whole() {
        assert_eq!(joined("new\n", "old\n"), "new\n");
        assert_eq!(joined("new\n", ""), "new\n");
        // Quoted inside a line, the heading is not the hand-written part.
        let quoted = format!("old `{HAND_WRITTEN}`\n");
        assert_eq!(joined("new\n", &quoted), "new\n");
    }

    #[test]
    fn a_section_alone_replaces_only_its_own() {
        let old = format!(
            "# B\n\n## 6. Slow\n\nsix\n\n## 7. Count\n\nold\n\n### sub\n\nold too\n\n{HAND_WRITTEN})\n\n## 7. Count is quoted here\n"
        );
        let new = with_section(&old, "## 7. Count", "## 7. Count\n\nnew\n");
        assert_eq!(
            new,
            format!("# B\n\n## 6. Slow\n\nsix\n\n## 7. Count\n\nnew\n\n{HAND_WRITTEN})\n\n## 7. Count is quoted here\n")
        );
        // A section in the middle keeps the one after it.
        let middle = with_section(&new, "## 6. Slow", "## 6. Slow\n\nsix again\n");
        assert!(
            middle.contains("six again\n\n## 7. Count\n\nnew\n\n## Reading"),
            "{middle}"
        );
    }

    #[test]
    fn a_missing_section_is_added_before_the_hand_written_part() {
        let old = format!("# B\n\n## 6. Slow\n\nsix\n\n{HAND_WRITTEN})\nnotes\n");
        let new = with_section(&old, "## 7. Count", "## 7. Count\n\nnew\n");
        assert_eq!(
            new,
            format!("# B\n\n## 6. Slow\n\nsix\n\n## 7. Count\n\nnew\n\n{HAND_WRITTEN})\nnotes\n")
        );
        assert_eq!(with_section("", "## 7", "## 7\n\nnew\n"), "## 7\n\nnew\n");
    }

    #[test]
    fn a_file_that_is_all_hand_written_keeps_it_all() {
        let old = format!("{HAND_WRITTEN})\nnotes\n");
        assert_eq!(joined("new\n", &old), format!("new\n\n{old}"));
    }
}
