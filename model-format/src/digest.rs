//! FNV-1a 64-bit hashing, used for the weights digest and the dataset fingerprint.
//! It catches mix-ups (metadata grafted onto other weights, a different copy of the
//! data), not tampering; it is a dozen lines and needs no dependency.

/// An incremental FNV-1a 64 hasher.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a64 {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The digest as `fnv1a64:` followed by 16 hex digits.
    pub fn finish(&self) -> String {
        format!("fnv1a64:{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_test_vectors() {
        let mut h = Fnv1a64::default();
        assert_eq!(h.finish(), "fnv1a64:cbf29ce484222325");
        h.update(b"a");
        assert_eq!(h.finish(), "fnv1a64:af63dc4c8601ec8c");
        let mut h = Fnv1a64::default();
        h.update(b"foobar");
        assert_eq!(h.finish(), "fnv1a64:85944171f73967e8");
    }
}
