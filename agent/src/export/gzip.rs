//! gzip of request bodies with one compressor kept for every request of a client. A new
//! compressor allocates ~300 KB of tables each time: above glibc's mmap threshold, so
//! every request mapped, faulted in and unmapped them, and freeing them consolidated the
//! heap. Reset, the kept one clears its tables in place.

use std::io::Write;
use std::sync::Mutex;

use flate2::Compression;
use flate2::write::DeflateEncoder;

use crate::sync::LockExt;

/// The gzip member header (RFC 1952): deflate, no flags, no time, no extra flags, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A reusable gzip compressor (fastest level, as request bodies want).
pub struct Gzip {
    deflate: Mutex<DeflateEncoder<Vec<u8>>>,
}

impl Default for Gzip {
    fn default() -> Self {
        Gzip {
            deflate: Mutex::new(new_encoder()),
        }
    }
}

impl Gzip {
    /// `data` as one gzip member.
    pub fn compress(&self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut deflate = self.deflate.locked_as("gzip compressor");
        let compressed = deflate_member(&mut deflate, data);
        if compressed.is_err() {
            // Whatever state the failure left, the next request starts afresh.
            *deflate = new_encoder();
        }
        let mut out = compressed?;
        let mut crc = flate2::Crc::new();
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        // ISIZE: the length modulo 2^32.
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        Ok(out)
    }
}

fn new_encoder() -> DeflateEncoder<Vec<u8>> {
    DeflateEncoder::new(Vec::new(), Compression::fast())
}

/// The gzip header and `data` deflated, from `deflate`, which is fresh (new, or reset by
/// the previous call) and writes into an empty buffer; it is left reset.
fn deflate_member(deflate: &mut DeflateEncoder<Vec<u8>>, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let out = deflate.get_mut();
    out.reserve(data.len() / 4 + HEADER.len() + 8);
    out.extend_from_slice(&HEADER);
    deflate.write_all(data)?;
    // Finishes the stream, takes the buffer back and leaves a fresh compressor.
    deflate.reset(Vec::new())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    #[test]
    fn each_request_is_a_whole_gzip_member_with_the_same_compressor() {
        let gzip = Gzip::default();
        let first: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let second = b"a second, shorter request".repeat(3);
        for data in [&first[..], &second[..], &[][..], &first[..]] {
            let compressed = gzip.compress(data).expect("compresses");
            assert_eq!(gunzip(&compressed), data);
        }
        // The same input gives the same bytes: nothing of the previous stream leaks in.
        assert_eq!(
            gzip.compress(&second).expect("compresses"),
            Gzip::default().compress(&second).expect("compresses")
        );
    }
}
