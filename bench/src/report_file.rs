//! The file `--write` writes: the run's report in place of the one before,
//! and the part of the file written by hand kept as it was. In
//! BENCHMARKS.md that part begins at [`HAND_WRITTEN`] and runs to the end.

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

/// `report`, then `old` from its hand-written heading on (a heading at
/// the start of a line), one blank line between.
fn joined(report: &str, old: &str) -> String {
    let at = if old.starts_with(HAND_WRITTEN) {
        Some(0)
    } else {
        old.find(&format!("\n{HAND_WRITTEN}")).map(|at| at + 1)
    };
    match at {
        Some(at) => format!("{}\n\n{}", report.trim_end(), &old[at..]),
        None => report.to_owned(),
    }
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
    fn a_file_that_is_all_hand_written_keeps_it_all() {
        let old = format!("{HAND_WRITTEN})\nnotes\n");
        assert_eq!(joined("new\n", &old), format!("new\n\n{old}"));
    }
}
