//! Splitting a chunked byte stream into newline-delimited JSON lines.
//!
//! HTTP chunks do not respect line boundaries: one chunk may hold half a line, or three
//! lines and the start of a fourth. [`LineSplitter`] keeps the partial tail between chunks.

/// Accumulates bytes and hands out complete, non-empty lines (without the newline).
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Adds a chunk and returns every line it completed, in order.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..pos]);
            let line = std::mem::take(&mut self.partial);
            if !is_blank(&line) {
                lines.push(line);
            }
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        lines
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
            out.extend(s.push(c.as_bytes()));
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
        assert!(s.push(a).is_empty());
        assert_eq!(s.push(b), vec![text.trim_end().as_bytes().to_vec()]);
    }
}
