//! Quantiles of an explicit-bucket histogram, estimated the way Prometheus'
//! `histogram_quantile` does: find the bucket the rank falls in and interpolate linearly
//! between its lower and upper bound.

/// The `q`-quantile (0 ≤ q ≤ 1) of observations counted per bucket: `counts[i]` observations
/// at most `bounds[i]` (and above `bounds[i - 1]`), the last count above the last bound.
///
/// - The first bucket's lower bound is 0 (or, when its upper bound is not above 0, the
///   estimate is that upper bound).
/// - A rank that falls in the last bucket (to +Inf) gives the highest finite bound.
/// - `None` when there is nothing to estimate from: no observations, no finite bound, or
///   `counts` not one longer than `bounds`.
pub fn quantile(q: f64, bounds: &[f64], counts: &[u64]) -> Option<f64> {
    if bounds.is_empty() || counts.len() != bounds.len() + 1 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    // The first finite bucket whose cumulative count reaches the rank.
    let mut below = 0u64;
    for (i, (&upper, &count)) in bounds.iter().zip(counts).enumerate() {
        let cumulative = below + count;
        if cumulative as f64 >= rank {
            if i == 0 && upper <= 0.0 {
                return Some(upper);
            }
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            if count == 0 {
                return Some(lower);
            }
            let into = (rank - below as f64) / count as f64;
            return Some(lower + (upper - lower) * into);
        }
        below = cumulative;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::quantile;

    const BOUNDS: [f64; 4] = [0.1, 0.2, 0.5, 1.0];
    /// 100 observations: 10 up to 0.1, 20 in (0.1, 0.2], 60 in (0.2, 0.5], 10 in (0.5, 1].
    const COUNTS: [u64; 5] = [10, 20, 60, 10, 0];

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn interpolates_inside_the_bucket_the_rank_falls_in() {
        // p50: rank 50, cumulative 10, 30, 90: bucket (0.2, 0.5], 20 of its 60 -> 0.2 + 0.3 * 20/60.
        assert!(close(quantile(0.5, &BOUNDS, &COUNTS), 0.3));
        // p95: rank 95, bucket (0.5, 1], 5 of 10 -> 0.75.
        assert!(close(quantile(0.95, &BOUNDS, &COUNTS), 0.75));
        // p99: rank 99, 9 of 10 -> 0.95.
        assert!(close(quantile(0.99, &BOUNDS, &COUNTS), 0.95));
        // p10: rank 10 reaches the end of the first bucket, whose lower bound is 0.
        assert!(close(quantile(0.1, &BOUNDS, &COUNTS), 0.1));
        // p5: halfway into the first bucket.
        assert!(close(quantile(0.05, &BOUNDS, &COUNTS), 0.05));
    }

    #[test]
    fn a_rank_in_the_infinite_bucket_gives_the_highest_finite_bound() {
        // 50 of 100 above 1.0: p95 lies in (1, +Inf).
        assert!(close(quantile(0.95, &BOUNDS, &[0, 0, 0, 50, 50]), 1.0));
        // p50 is the end of (0.5, 1].
        assert!(close(quantile(0.5, &BOUNDS, &[0, 0, 0, 50, 50]), 1.0));
        // p25 is halfway into it.
        assert!(close(quantile(0.25, &BOUNDS, &[0, 0, 0, 50, 50]), 0.75));
    }

    #[test]
    fn empty_buckets_before_the_rank_are_skipped() {
        // 4 observations all in (0.2, 0.5]: p50 -> rank 2 -> 0.2 + 0.3 * 2/4.
        assert!(close(quantile(0.5, &BOUNDS, &[0, 0, 4, 0, 0]), 0.35));
    }

    #[test]
    fn a_first_bound_not_above_zero_is_the_estimate() {
        assert!(close(quantile(0.1, &[-1.0, 0.0, 1.0], &[5, 5, 0, 0]), -1.0));
        // Above the first bucket, interpolation starts from its bound.
        assert!(close(
            quantile(0.75, &[-1.0, 0.0, 1.0], &[5, 5, 0, 0]),
            -0.5
        ));
    }

    #[test]
    fn nothing_to_estimate_from_is_none() {
        assert_eq!(quantile(0.5, &BOUNDS, &[0; 5]), None);
        assert_eq!(quantile(0.5, &[], &[7]), None);
        assert_eq!(quantile(0.5, &BOUNDS, &[1, 2, 3]), None);
        assert_eq!(quantile(1.5, &BOUNDS, &COUNTS), None);
    }
}
