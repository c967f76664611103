//! A rules file cut at its rules, so that a reload reads again only the
//! rules whose text changed: an edit to one rule of a file of 10,000 costs
//! that rule, as an edit to one file of a folder costs that file.
//!
//! The cut is made on the text, by lines: the line `rules:` at the start
//! of a line, then a block list whose items start `- ` at one indentation;
//! an item runs to the next item or to the first line indented no deeper
//! than the list that is not an item (the next top-level key). Blank and
//! comment lines go with the item before them. What is left, the head, is
//! the file with the items' lines left empty, so that every line keeps its
//! number.
//!
//! A cut is only a faster way to the same result, never a second reading
//! of YAML: a file not of that shape (a flow list, a directive or document
//! marker, tabs for indentation) is not cut, and the caller reads the file
//! whole whenever a part or the head does not read back as one list item
//! or as a head whose `rules:` is empty (an alias to an anchor in another
//! part, a flow mapping closed at the list's own indentation, a syntax
//! error), so that messages are those of the whole file.

/// A file's head and its rule items.
pub(super) struct Cut<'a> {
    /// The file with the items' lines emptied.
    pub head: String,
    /// Each item's text, from the start of its first line, with that
    /// line's number.
    pub parts: Vec<(usize, &'a str)>,
}

/// The file cut at its rules, when it has the shape above.
pub(super) fn cut(text: &str) -> Option<Cut<'_>> {
    let mut lines = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', text.as_bytes()) {
        lines.push((start, end + 1));
        start = end + 1;
    }
    if start < text.len() {
        lines.push((start, text.len()));
    }
    let line = |i: usize| &text[lines[i].0..lines[i].1];
    let plain =
        |l: &str| !l.starts_with(['%', '\t']) && !l.starts_with("---") && !l.starts_with("...");
    let at = (0..lines.len()).find(|&i| is_rules_key(line(i)))?;
    if !(0..=at).all(|i| plain(line(i))) {
        return None;
    }
    // The first item fixes the list's indentation.
    let first = (at + 1..lines.len()).find(|&i| !is_blank(line(i)))?;
    let indent = item_indent(line(first))?;
    let mut parts: Vec<(usize, usize, usize)> = Vec::new(); // (first line, from, to)
    let mut end = first;
    for (i, &(from, to)) in lines.iter().enumerate().skip(first) {
        let l = &text[from..to];
        if !plain(l) {
            return None;
        }
        if item_indent(l) == Some(indent) {
            parts.push((i + 1, from, to));
        } else if is_blank(l) || l.len() - l.trim_start_matches(' ').len() > indent {
            if l.trim_start_matches(' ').starts_with('\t') {
                return None;
            }
            parts.last_mut().expect("the first line is an item").2 = to;
        } else {
            break;
        }
        end = i + 1;
    }
    if (end..lines.len()).any(|i| !plain(line(i))) {
        return None;
    }
    let (from, to) = (parts[0].1, parts.last().expect("one item at least").2);
    let mut head = String::with_capacity(text.len() - (to - from) + (end - first));
    head.push_str(&text[..from]);
    head.extend(std::iter::repeat_n('\n', end - first));
    head.push_str(&text[to..]);
    Some(Cut {
        head,
        parts: parts.iter().map(|&(n, s, e)| (n, &text[s..e])).collect(),
    })
}

/// `rules:` at the start of a line, nothing after it but a comment.
fn is_rules_key(l: &str) -> bool {
    l.strip_prefix("rules:").is_some_and(|rest| {
        let rest = rest.trim_start_matches([' ', '\t']);
        rest.is_empty() || rest.starts_with('#') || rest.trim_end().is_empty()
    })
}

/// An empty line, or one that is only a comment.
fn is_blank(l: &str) -> bool {
    let t = l.trim_start_matches([' ', '\t']).trim_end();
    t.is_empty() || t.starts_with('#')
}

/// The indentation of a line that starts a list item (`  - …`).
fn item_indent(l: &str) -> Option<usize> {
    let body = l.trim_start_matches(' ');
    let rest = body.strip_prefix('-')?;
    (rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n'])).then_some(l.len() - body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str) -> Option<(String, Vec<(usize, String)>)> {
        let c = cut(text)?;
        Some((
            c.head,
            c.parts.iter().map(|&(n, t)| (n, t.to_string())).collect(),
        ))
    }

    #[test]
    fn items_are_cut_at_their_indentation_and_the_head_keeps_its_lines() {
        let text = "lists:\n  a: [x]\nrules:\n  # first\n  - id: a\n    when: { field: x, above: 1 }\n\n  - { id: b }\n    # b's\nlists2: 1\n";
        let (head, p) = parts(text).expect("cut");
        assert_eq!(
            head,
            "lists:\n  a: [x]\nrules:\n  # first\n\n\n\n\n\nlists2: 1\n"
        );
        assert_eq!(
            p,
            vec![
                (
                    5,
                    "  - id: a\n    when: { field: x, above: 1 }\n\n".to_string()
                ),
                (8, "  - { id: b }\n    # b's\n".to_string()),
            ]
        );
        assert_eq!(head.lines().count(), text.lines().count());
    }

    #[test]
    fn a_list_at_the_keys_own_indentation_and_crlf_lines_are_cut() {
        let (head, p) = parts("rules:\r\n- id: a\r\n  x: 1\r\n- id: b\r\n").expect("cut");
        assert_eq!(head, "rules:\r\n\n\n\n");
        assert_eq!(p[0], (2, "- id: a\r\n  x: 1\r\n".to_string()));
        assert_eq!(p[1], (4, "- id: b\r\n".to_string()));
    }

    #[test]
    fn files_of_another_shape_are_not_cut() {
        for text in [
            "rules: [ { id: a } ]\n",
            "rules:\n",
            "rules:\nlists: {}\n",
            "%YAML 1.2\n---\nrules:\n  - id: a\n",
            "rules:\n  - id: a\n---\nrules:\n  - id: b\n",
            "rules:\n  - id: a\n\t  x: 1\n",
            "\"rules\":\n  - id: a\n",
        ] {
            assert!(cut(text).is_none(), "{text:?}");
        }
    }
}
