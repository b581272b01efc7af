//! Philox-4x32-10: the published Random123 known-answer vectors, and the U(-b, b) mapping.

use mtcool::noise::{philox4x32_10, stream, u32_to_unit, NoiseKey};

#[test]
fn philox_known_answers() {
    let kat: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
        ([u32::MAX; 4], [u32::MAX; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];
    for (ctr, key, want) in kat {
        assert_eq!(philox4x32_10(ctr, key), want, "ctr {ctr:08x?} key {key:08x?}");
    }
}

#[test]
fn unit_interval_ends() {
    assert_eq!(u32_to_unit(0), 0.5 / 16_777_216.0);
    assert!(u32_to_unit(0) > 0.0);
    // 16777215.5 is not an f32: the very top words round to exactly 1.0 (ties to even), as on the GPU.
    assert_eq!(u32_to_unit(u32::MAX), 1.0);
    assert!(u32_to_unit(0xFFFF_FE00) < 1.0);
    assert_eq!(u32_to_unit(0x8000_0000), (0x80_0000 as f32 + 0.5) / 16_777_216.0);
}

#[test]
fn uniform_noise_is_bounded_centred_and_keyed() {
    let key = NoiseKey { seed: 0x1234_5678_9abc_def0, step: 7, stream: stream::TASK2, sample: 0 };
    let b = 0.05;
    let n = 200_000u32;
    let xs: Vec<f32> = (0..n).map(|i| key.uniform(i, b)).collect();
    assert!(xs.iter().all(|&x| x > -b && x <= b));
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    assert!(mean.abs() < 1e-3 * b as f64 * 10.0, "mean {mean}");
    // U(-b, b) has variance b²/3.
    let want = (b as f64).powi(2) / 3.0;
    assert!((var - want).abs() / want < 0.02, "var {var} want {want}");
    // Same key, same values; any other counter word or seed changes them.
    assert_eq!(key.uniform(12345, b), xs[12345]);
    for other in [
        NoiseKey { step: 8, ..key },
        NoiseKey { stream: stream::TASK1, ..key },
        NoiseKey { sample: 1, ..key },
        NoiseKey { seed: key.seed + 1, ..key },
        NoiseKey { seed: key.seed ^ (1 << 40), ..key },
    ] {
        let same = (0..1000).filter(|&i| other.uniform(i, b) == key.uniform(i, b)).count();
        assert!(same < 5, "{other:?} repeats {same} of 1000 values");
    }
}

#[test]
fn perturb_adds_the_indexed_noise() {
    let key = NoiseKey { seed: 3, step: 1, stream: stream::TASK1, sample: 2 };
    // 4 elements (the scalar tail alone) and 37 (two vectorised blocks of 16, then a tail of 5).
    for len in [4, 37] {
        let w: Vec<f32> = (0..len).map(|i| [1.0f32, -2.0, 0.5, 3.0][i % 4] + i as f32).collect();
        let p = key.perturb(&w, 0.1, 7);
        assert_eq!(p.len(), len);
        for (i, (&a, &x)) in p.iter().zip(&w).enumerate() {
            assert_eq!(a.to_bits(), (x + key.uniform(7 + i as u32, 0.1)).to_bits(), "element {i} of {len}");
            assert_ne!(a, x);
        }
    }
}
