//! Randomness for everything that draws ids, nonces, jitter or sampling: one source, so a
//! lint keeps the rest of the code from reaching for its own (clippy.toml `disallowed-methods`)
//! and a deterministic test has one place to replace.

/// A random value of any type `rand` can draw (integers, byte arrays, ...), from the
/// thread-local generator, seeded from the operating system.
#[allow(clippy::disallowed_methods)] // the one place that draws
pub fn random<T>() -> T
where
    rand::distr::StandardUniform: rand::distr::Distribution<T>,
{
    rand::random()
}

/// Fills `buf` with random bytes.
#[allow(clippy::disallowed_methods)] // the one place that draws
pub fn fill(buf: &mut [u8]) {
    rand::RngCore::fill_bytes(&mut rand::rng(), buf)
}

/// A new random (version 4) UUID: topic ids, member ids, cluster ids.
#[allow(clippy::disallowed_methods)] // the one place that draws
pub fn uuid_v4() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_differ() {
        assert_ne!(super::random::<[u8; 16]>(), super::random::<[u8; 16]>());
        assert_ne!(super::uuid_v4(), super::uuid_v4());
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        super::fill(&mut a);
        super::fill(&mut b);
        assert_ne!(a, b);
    }
}
