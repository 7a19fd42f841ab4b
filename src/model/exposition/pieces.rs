//! A body received in frames, cut into pieces of whole lines for the parser: each frame is
//! read where it arrived, and only a line cut across frames is copied (into `joins`).
//! Copying every frame into one buffer first cost as much as the kernel's own copy.

/// Pieces of `frames`, in order, each a run of whole lines (the last may lack its newline,
/// as a body's last line may). Lines cut across frames are joined in `joins`.
pub fn line_pieces<'a, F: AsRef<[u8]>>(frames: &'a [F], joins: &'a mut Vec<u8>) -> Vec<&'a [u8]> {
    enum Piece {
        Frame(usize, usize, usize),
        Joined(usize, usize),
    }
    joins.clear();
    let mut pieces = Vec::with_capacity(2 * frames.len());
    // Where in `joins` the line cut at the end of the last frame starts.
    let mut cut: Option<usize> = None;
    for (i, frame) in frames.iter().enumerate() {
        let frame = frame.as_ref();
        let mut from = 0;
        if let Some(start) = cut {
            match memchr::memchr(b'\n', frame) {
                Some(nl) => {
                    joins.extend_from_slice(&frame[..=nl]);
                    pieces.push(Piece::Joined(start, joins.len()));
                    cut = None;
                    from = nl + 1;
                }
                None => {
                    // A line longer than this frame: it goes on in the next.
                    joins.extend_from_slice(frame);
                    continue;
                }
            }
        }
        let whole = memchr::memrchr(b'\n', &frame[from..]).map_or(from, |nl| from + nl + 1);
        if whole > from {
            pieces.push(Piece::Frame(i, from, whole));
        }
        if whole < frame.len() {
            cut = Some(joins.len());
            joins.extend_from_slice(&frame[whole..]);
        }
    }
    if let Some(start) = cut {
        pieces.push(Piece::Joined(start, joins.len()));
    }
    let joins: &'a [u8] = joins;
    pieces
        .into_iter()
        .map(|p| match p {
            Piece::Frame(i, from, to) => &frames[i].as_ref()[from..to],
            Piece::Joined(from, to) => &joins[from..to],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{Entry, Format, Parser};
    use super::*;

    /// Everything a parse yields, in order: entries, the line each came from, and the error
    /// that ended it (with its line), if any.
    fn parse_all(p: &mut Parser<'_>) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match p.next_entry() {
                Ok(Some(e)) => {
                    let labels: Vec<_> = p
                        .labels()
                        .iter()
                        .map(|l| (p.label_name(l).to_string(), p.label_value(l).into_owned()))
                        .collect();
                    let e = match e {
                        Entry::Sample(s) => {
                            format!("{} {:?} {:?} {:?}", s.name, labels, s.value, s.timestamp_ms)
                        }
                        other => format!("{other:?}"),
                    };
                    out.push(format!("{}: {e}", p.line()));
                }
                Ok(None) => return out,
                Err(e) => {
                    out.push(format!("error {e}"));
                    return out;
                }
            }
        }
    }

    fn in_pieces(frames: &[&[u8]], format: Format) -> Vec<String> {
        let mut joins = Vec::new();
        let pieces = line_pieces(frames, &mut joins);
        for p in pieces.iter().rev().skip(1) {
            assert!(p.ends_with(b"\n"), "a piece but the last ends a line");
        }
        let (first, rest) = pieces
            .split_first()
            .map_or((&b""[..], &[][..]), |(f, r)| (*f, r));
        parse_all(&mut Parser::over_pieces(first, rest, format))
    }

    /// Cut into two and three frames at every place (and into one-byte frames), a body
    /// parses exactly as whole: the same entries from the same lines, the same errors.
    #[test]
    fn a_body_in_frames_parses_as_when_whole() {
        let bodies: [(&str, Format); 6] = [
            (
                "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"a\\\"b\"} 3 1700000000000\n\n  \nb 2\nc{le=\"+Inf\"} 7",
                Format::Text,
            ),
            ("a 1\nb 2\n", Format::Text),
            ("a 1\nb{x=} 2\nc 3\n", Format::Text),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_sum 3\n# EOF\n",
                Format::OpenMetrics,
            ),
            ("a 1\n# EOF\nb 2\n", Format::OpenMetrics),
            ("a 1\nb 2\n", Format::OpenMetrics),
        ];
        for (body, format) in bodies {
            let body = body.as_bytes();
            let whole = parse_all(&mut Parser::new(body, format));
            assert!(!whole.is_empty());
            for i in 0..=body.len() {
                let (a, b) = body.split_at(i);
                assert_eq!(in_pieces(&[a, b], format), whole, "cut at {i}");
                for j in i..=body.len() {
                    let (b, c) = b.split_at(j - i);
                    assert_eq!(in_pieces(&[a, b, c], format), whole, "cut at {i}, {j}");
                }
            }
            let bytes: Vec<&[u8]> = body.chunks(1).collect();
            assert_eq!(in_pieces(&bytes, format), whole, "one-byte frames");
        }
    }

    #[test]
    fn only_lines_cut_across_frames_are_copied() {
        let frames: [&[u8]; 3] = [b"a 1\nb 2\nc", b" 3\nd 4\n", b"e 5"];
        let mut joins = Vec::new();
        let pieces = line_pieces(&frames, &mut joins);
        let want: [&[u8]; 4] = [b"a 1\nb 2\n", b"c 3\n", b"d 4\n", b"e 5"];
        assert_eq!(pieces, want);
        assert_eq!(joins, b"c 3\ne 5");
        assert!(line_pieces::<&[u8]>(&[], &mut joins).is_empty());
    }
}
