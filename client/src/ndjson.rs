//! Splitting a chunked byte stream into newline-delimited JSON lines.
//!
//! HTTP chunks do not respect line boundaries: one chunk may hold half a line, or three
//! lines and the start of a fourth. [`LineSplitter`] keeps the partial tail between chunks,
//! up to a limit: a line longer than [`MAX_LINE_BYTES`] is refused rather than grown
//! without bound (no object the server stores comes near it: bodies are at most 1 MiB).

/// The longest line a watch stream may send (16 MiB).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// A line over the limit (the limit, in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineTooLong(pub usize);

/// Accumulates bytes and hands out complete, non-empty lines (without the newline).
#[derive(Debug)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
    limit: usize,
}

impl Default for LineSplitter {
    fn default() -> LineSplitter {
        LineSplitter::with_limit(MAX_LINE_BYTES)
    }
}

impl LineSplitter {
    /// A splitter refusing lines longer than `limit` bytes.
    pub(crate) fn with_limit(limit: usize) -> LineSplitter {
        LineSplitter {
            partial: Vec::new(),
            limit,
        }
    }

    /// Adds a chunk and returns every line it completed, in order; a line (complete or not)
    /// longer than the limit is an error, after which the splitter should be dropped.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.extend(&rest[..pos])?;
            let line = std::mem::take(&mut self.partial);
            if !is_blank(&line) {
                lines.push(line);
            }
            rest = &rest[pos + 1..];
        }
        self.extend(rest)?;
        Ok(lines)
    }

    fn extend(&mut self, bytes: &[u8]) -> Result<(), LineTooLong> {
        if self.partial.len() + bytes.len() > self.limit {
            self.partial = Vec::new();
            return Err(LineTooLong(self.limit));
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// The last line when the stream ended without a newline after it.
    pub(crate) fn finish(&mut self) -> Option<Vec<u8>> {
        let line = std::mem::take(&mut self.partial);
        (!is_blank(&line)).then_some(line)
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&str]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        for c in chunks {
            out.extend(s.push(c.as_bytes()).unwrap());
        }
        out.extend(s.finish());
        out.into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_across_chunk_boundaries() {
        assert_eq!(
            split(&["{\"a\":1}\n{\"b\"", ":2}\n"]),
            ["{\"a\":1}", "{\"b\":2}"]
        );
        assert_eq!(split(&["x", "y", "z\n"]), ["xyz"]);
        assert_eq!(split(&["a\nb\nc\n"]), ["a", "b", "c"]);
        assert_eq!(split(&["a\n", "\n", "\r\n", "b"]), ["a", "b"]);
        assert_eq!(split(&["", "\n", ""]), Vec::<String>::new());
    }

    #[test]
    fn multibyte_text_split_mid_character() {
        let text = "{\"m\":\"é\"}\n";
        let (a, b) = text.as_bytes().split_at(8);
        let mut s = LineSplitter::default();
        assert!(s.push(a).unwrap().is_empty());
        assert_eq!(
            s.push(b).unwrap(),
            vec![text.trim_end().as_bytes().to_vec()]
        );
    }

    #[test]
    fn a_line_over_the_limit_is_refused_whole_or_in_pieces() {
        let mut s = LineSplitter::with_limit(4);
        assert_eq!(s.push(b"abcd\nef").unwrap(), vec![b"abcd".to_vec()]);
        assert_eq!(s.push(b"g"), Ok(vec![]));
        assert_eq!(s.push(b"hi"), Err(LineTooLong(4)));
        let mut s = LineSplitter::with_limit(4);
        assert_eq!(s.push(b"abcdefgh\n"), Err(LineTooLong(4)));
    }
}
