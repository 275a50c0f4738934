//! A line diff (longest common subsequence) of expected and actual text.

/// `expected` and `actual` line by line: ` ` both, `-` expected only, `+` actual only.
/// Unchanged runs longer than `2 * CONTEXT` lines are cut to their ends.
pub fn unified(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut lines: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            lines.push(('-', a[i]));
            i += 1;
        } else {
            lines.push(('+', b[j]));
            j += 1;
        }
    }
    render(&lines)
}

/// Unchanged lines kept on each side of a change.
const CONTEXT: usize = 3;

fn render(lines: &[(char, &str)]) -> String {
    let near_change = |k: usize| {
        let from = k.saturating_sub(CONTEXT);
        let to = (k + CONTEXT + 1).min(lines.len());
        lines[from..to].iter().any(|(tag, _)| *tag != ' ')
    };
    let mut out = String::from("--- expected\n+++ actual\n");
    let mut skipped = false;
    for (k, (tag, line)) in lines.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("@@ ... @@\n");
                skipped = false;
            }
            out.push(*tag);
            out.push_str(line);
            out.push('\n');
        } else {
            skipped = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_lines_are_marked_with_context() {
        let expected = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let actual = "a\nb\nc\nd\ne\nF\ng\nh\ni\nj\n";
        let diff = unified(expected, actual);
        assert_eq!(
            diff,
            "--- expected\n+++ actual\n@@ ... @@\n c\n d\n e\n-f\n+F\n g\n h\n i\n+j\n"
        );
        assert_eq!(unified("x\n", "x\n"), "--- expected\n+++ actual\n");
    }
}
