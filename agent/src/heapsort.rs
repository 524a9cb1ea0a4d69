//! An in-place heapsort for the firmware's few sorts (the e820 map, keyslot priorities,
//! keyslot areas, PCR indices).
//!
//! Written by hand because of its size: core's `sort_unstable` instantiates about 3 KiB of
//! pattern-defeating quicksort, heapsort fallback and small-sort networks per element type,
//! 15 KiB of ROM for five lists of a few dozen entries (`cargo xtask bench rom`). This is
//! O(n log n) on any input, so a hostile list (a LUKS2 header with thousands of keyslots)
//! cannot make it quadratic; it is not stable, so callers sort by a total order.

/// Sort `v` by `key`, ascending.
pub fn sort_by_key<T, K: Ord>(v: &mut [T], key: impl Fn(&T) -> K) {
    let less = |v: &[T], a: usize, b: usize| key(&v[a]) < key(&v[b]);
    let n = v.len();
    // Build a max-heap, then move the largest to the end one at a time.
    for start in (0..n / 2).rev() {
        sift_down(v, start, n, &less);
    }
    for end in (1..n).rev() {
        v.swap(0, end);
        sift_down(v, 0, end, &less);
    }
}

fn sift_down<T>(v: &mut [T], mut root: usize, end: usize, less: &impl Fn(&[T], usize, usize) -> bool) {
    loop {
        let mut child = 2 * root + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && less(v, child, child + 1) {
            child += 1;
        }
        if !less(v, root, child) {
            return;
        }
        v.swap(root, child);
        root = child;
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sorts_like_core(mut v in proptest::collection::vec((0u8..8, any::<u16>()), 0..200)) {
            let mut want = v.clone();
            want.sort_unstable();
            super::sort_by_key(&mut v, |x| *x);
            prop_assert_eq!(v, want);
        }

        #[test]
        fn sorts_by_the_key_only(mut v in proptest::collection::vec(any::<u32>(), 0..100)) {
            super::sort_by_key(&mut v, |x| core::cmp::Reverse(*x));
            prop_assert!(v.windows(2).all(|w| w[0] >= w[1]));
        }
    }

    #[test]
    fn edge_cases() {
        let mut empty: Vec<u8> = Vec::new();
        super::sort_by_key(&mut empty, |x| *x);
        let mut one = [5];
        super::sort_by_key(&mut one, |x| *x);
        assert_eq!(one, [5]);
        let mut same = [3; 17];
        super::sort_by_key(&mut same, |x| *x);
        assert_eq!(same, [3; 17]);
    }
}
