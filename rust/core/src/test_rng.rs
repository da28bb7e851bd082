//! Deterministic pseudo-random test data (Marsaglia's xorshift): the same
//! bytes on every run and machine, so size tests and stored-byte hashes
//! compare like with like. Tests only.

/// xorshift32 with shifts (13, 17, 5).
pub(crate) struct XorShift32(u32);

impl XorShift32 {
    /// A zero state would stay zero, so the low bit is forced on.
    pub(crate) fn new(seed: u32) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// Uniform in [-0.5, 0.5].
    pub(crate) fn centered(&mut self) -> f32 {
        self.next_u32() as f32 / u32::MAX as f32 - 0.5
    }
}

/// xorshift64 with shifts (13, 7, 17).
pub(crate) struct XorShift64(u64);

impl XorShift64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// fp32 weights-like bytes: random mantissas, exponents spread over a few
/// binades (planes 0-2 store raw, the exponent plane Huffman-codes).
pub(crate) fn fp32_weights(n: usize, seed: u32) -> Vec<u8> {
    let mut rng = XorShift32::new(seed);
    (0..n)
        .flat_map(|i| (rng.centered() / (1 << (i % 5)) as f32).to_le_bytes())
        .collect()
}
