//! What the benchmarks share.

use pdtf_models::{Entry, Quality, RecordBody, Sample, TagId, Timestamp};

/// `n` sample records over 32 tags, 100 ms apart from the `offset`-th.
pub fn batch(n: usize, offset: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let t = Timestamp::from_unix_nanos(
                1_763_800_000_000_000_000 + ((offset + i) as i64) * 100_000_000,
            );
            Entry {
                time: t,
                body: RecordBody::Sample(Sample::new(
                    TagId((i % 32) as u32),
                    20.0 + (i as f64 * 0.37).sin(),
                    Quality::Good,
                    Some(t),
                    t,
                )),
            }
        })
        .collect()
}
