/// A small deterministic random source (SplitMix64), so that a node's
/// election timeouts repeat exactly for the same seed.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Returns a value in `[low, high)`. `high` must exceed `low`.
    pub(crate) fn range(&mut self, low: u32, high: u32) -> u32 {
        debug_assert!(high > low);
        low + (self.next_u64() % u64::from(high - low)) as u32
    }
}
