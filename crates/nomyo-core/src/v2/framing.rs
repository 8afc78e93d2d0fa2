//! Length-prefixed chunk framing (EHBP §4.3): each frame is a big-endian
//! `u32` length followed by that many ciphertext bytes. Zero-length frames are
//! ignored by receivers. There is no end marker: the body's end ends the message.

use super::V2Error;

/// Length of the prefix.
pub const PREFIX_LEN: usize = 4;

/// Prepends the length prefix to `ciphertext`, appending to `out`.
pub fn encode_frame(ciphertext: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(ciphertext.len()).expect("frame larger than 4 GiB");
    out.reserve(PREFIX_LEN + ciphertext.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(ciphertext);
}

/// An incremental frame parser: push bytes as they arrive, take complete frames.
///
/// A frame's announced length is checked against `max_frame` before any
/// allocation for it (`CHUNK_TOO_LARGE`).
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_frame,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete non-empty frame's ciphertext, `Ok(None)` if more bytes
    /// are needed. Zero-length frames are skipped.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, V2Error> {
        loop {
            let avail = &self.buf[self.start..];
            if avail.len() < PREFIX_LEN {
                self.compact();
                return Ok(None);
            }
            let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
            if len > self.max_frame {
                return Err(V2Error::ChunkTooLarge {
                    len,
                    max: self.max_frame,
                });
            }
            if avail.len() < PREFIX_LEN + len {
                self.compact();
                return Ok(None);
            }
            let frame = avail[PREFIX_LEN..PREFIX_LEN + len].to_vec();
            self.start += PREFIX_LEN + len;
            if len == 0 {
                continue;
            }
            return Ok(Some(frame));
        }
    }

    /// Call at the end of the body: an incomplete prefix or frame is an error.
    pub fn finish(&self) -> Result<(), V2Error> {
        if self.buffered() == 0 {
            Ok(())
        } else {
            Err(V2Error::FramingTruncated)
        }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_reassemble() {
        let mut wire = Vec::new();
        encode_frame(b"abc", &mut wire);
        encode_frame(b"", &mut wire);
        encode_frame(&[9u8; 300], &mut wire);
        for split in 0..=wire.len() {
            let mut d = FrameDecoder::new(1024);
            d.push(&wire[..split]);
            let mut got = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            d.push(&wire[split..]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            d.finish().unwrap();
            assert_eq!(got, vec![b"abc".to_vec(), vec![9u8; 300]]);
        }
    }

    #[test]
    fn truncation_is_detected() {
        let mut wire = Vec::new();
        encode_frame(b"abcdef", &mut wire);
        for cut in 1..wire.len() {
            let mut d = FrameDecoder::new(1024);
            d.push(&wire[..cut]);
            assert_eq!(d.next_frame().unwrap(), None);
            assert_eq!(d.finish(), Err(V2Error::FramingTruncated));
        }
    }

    #[test]
    fn oversized_frame_refused_before_allocation() {
        let mut d = FrameDecoder::new(16);
        d.push(&u32::MAX.to_be_bytes());
        assert!(matches!(d.next_frame(), Err(V2Error::ChunkTooLarge { .. })));
    }
}
