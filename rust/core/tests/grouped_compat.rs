//! Byte-grouped objects written by main's encoder as of fffc7d9 (the
//! build before the encoder's CRC32C and output-buffer changes) still read
//! back bit-exact, and today's encoder writes the very same bytes: the
//! SHA-256 digests below are of objects that build wrote through the
//! Python API (`put_bytes(..., compression_level, dtype)` to file://), on
//! the same generated data. A change of the stored form must be versioned
//! in the seekable trailer and keep old objects readable
//! (docs/ARCHITECTURE.md); only then do these digests change.

use std::sync::Arc;

use s3dlio_core::codec::{EncodeOptions, ObjectReader};
use s3dlio_core::object::{put_object, WriteOptions};
use s3dlio_core::store::memory::MemoryStore;
use s3dlio_core::store::{Location, ObjectStore, PutOptions};
use sha2::{Digest, Sha256};

/// Weight-like floats of `width` bytes from a counter hash (splitmix64):
/// random sign and mantissa, exponents skewed over 16 binades. Integer
/// only, so the Python generator that made the digests gives the same.
fn weights(width: usize, n: u64) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let mut z = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let h = z ^ (z >> 31);
            let sign = h >> 63;
            let exp = 112 + ((((h >> 8) & 0xFF) * ((h >> 16) & 0xFF)) >> 12);
            let v = if width == 2 {
                sign << 15 | exp << 7 | (h & 0x7F)
            } else {
                sign << 31 | exp << 23 | ((h >> 24) & 0x7F_FFFF)
            };
            v.to_le_bytes()[..width].to_vec()
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_from_main_read_back_and_are_written_the_same() {
    // (width, elements, level, stored bytes, SHA-256 of the stored object)
    // bf16: two frames, the first with a low plane stored raw, the second
    // with one compressed; fp32: two frames; a high level each.
    let cases = [
        (
            2,
            5 << 19,
            1,
            3_741_578,
            "063d41b24cd41ef3e4f6c75a35c0838dda225d5e60a7f4800fcb666b8050bf08",
        ),
        (
            2,
            5 << 19,
            19,
            3_741_578,
            "7008cfdbe6149ae81b1bedbc970aa9f532c7384d05b1e4104dff13e853c5257f",
        ),
        (
            4,
            3 << 19,
            1,
            5_390_822,
            "d8bad575d5404c6e4649dcf504e3917e122923421d9fc26a664389f9c69af289",
        ),
        (
            4,
            3 << 19,
            9,
            5_390_822,
            "c49bfa0e0c97f567f1cf1bea53f6775f032740333f228c4d6df1c1b75b0ede06",
        ),
    ];
    let store = MemoryStore::new();
    let dyn_store: Arc<dyn ObjectStore> = store.clone();
    for (width, n, level, size, digest) in cases {
        let data = weights(width, n);
        let key = format!("compat-{width}-{level}.zst");
        let loc = Location {
            store: dyn_store.clone(),
            key: key.clone(),
        };
        let opts = WriteOptions {
            encode: EncodeOptions {
                level: Some(level),
                byte_group: Some(width),
                ..Default::default()
            },
            put: PutOptions::default(),
        };
        put_object(&loc, &data, &opts).await.unwrap();
        let stored = store.get(&key).await.unwrap();
        assert_eq!(stored.len(), size, "width {width} level {level}");
        assert_eq!(hex(&stored), digest, "width {width} level {level}");
        let back = ObjectReader::open(dyn_store.clone(), &key)
            .await
            .unwrap()
            .read_all(None)
            .await
            .unwrap();
        assert!(back[..] == data[..], "width {width} level {level}");
    }
}
