//! MultiMNIST construction: shapes, labels, determinism, hand-checked placement and resize, max-overlap,
//! normalisation; and a build from the real test split when it is present.

mod common;

use common::real_mnist_dir;

use mtcool::data::mnist::{load_mnist, MnistSplit, Split};
use mtcool::data::multimnist::{build, resize_src, MEAN, STD};

const PX: usize = 784;

fn norm(v: u8) -> f32 {
    (v as f32 / 255.0 - MEAN) / STD
}

/// An image given as its nonzero pixels: ((row, col), value).
type Pixels<'a> = &'a [((usize, usize), u8)];

/// A split from (image, label) pairs.
fn split_of(items: &[(Pixels, u8)]) -> MnistSplit {
    let mut images = vec![0u8; items.len() * PX];
    for (k, (pix, _)) in items.iter().enumerate() {
        for &((r, c), v) in pix.iter() {
            images[k * PX + r * 28 + c] = v;
        }
    }
    MnistSplit { images, labels: items.iter().map(|&(_, l)| l).collect(), rows: 28, cols: 28 }
}

/// A pseudo-random split of n images.
fn noisy_split(n: usize) -> MnistSplit {
    let mut s = 0x2545F4914F6CDD1Du64;
    let images = (0..n * PX)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 56) as u8
        })
        .collect();
    MnistSplit { images, labels: (0..n).map(|i| (i % 10) as u8).collect(), rows: 28, cols: 28 }
}

/// The normalised output image as a map of its non-background pixels.
fn nonzero(img: &[f32]) -> Vec<((usize, usize), f32)> {
    let bg = norm(0);
    img.iter().enumerate().filter(|(_, &v)| v != bg).map(|(k, &v)| ((k / 28, k % 28), v)).collect()
}

#[test]
fn constants_and_resize_table() {
    assert_eq!(MEAN, 0.1307);
    assert_eq!(STD, 0.3081);
    // floor((d + 0.5) * 36 / 28), computed by hand.
    let expected =
        [0, 1, 3, 4, 5, 7, 8, 9, 10, 12, 13, 14, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27, 28, 30, 31, 32, 34, 35];
    let got: Vec<usize> = (0..28).map(resize_src).collect();
    assert_eq!(got, expected);
    for d in 0..28 {
        assert_eq!(resize_src(d), ((d as f64 + 0.5) * 36.0 / 28.0).floor() as usize);
    }
}

#[test]
fn shapes_labels_and_batch() {
    let s = noisy_split(50);
    let m = build(&s, 7, None);
    assert_eq!(m.len(), 50);
    assert_eq!(m.images.len(), 50 * PX);
    assert_eq!(m.left, s.labels, "left label is the image's own label");
    assert!(m.right.iter().all(|&r| r <= 9));
    assert!(m.images.iter().all(|v| v.is_finite()));
    let lo = norm(0);
    let hi = norm(255);
    assert!(m.images.iter().all(|&v| (lo..=hi).contains(&v)));

    let lim = build(&s, 7, Some(20));
    assert_eq!(lim.len(), 20);
    assert_eq!(lim.images[..], m.images[..20 * PX], "a limit keeps the prefix (same partners)");
    assert_eq!(build(&s, 7, Some(1000)).len(), 50, "limit above n is clamped");
    assert!(build(&MnistSplit { images: vec![], labels: vec![], rows: 28, cols: 28 }, 1, None).is_empty());

    let (x, l, r) = m.batch(&[3, 0, 49]);
    assert_eq!(x.shape(), &[3, 1, 28, 28]);
    assert_eq!(&x.data()[..PX], &m.images[3 * PX..4 * PX]);
    assert_eq!(&x.data()[2 * PX..], &m.images[49 * PX..50 * PX]);
    assert_eq!(l, vec![m.left[3] as u32, m.left[0] as u32, m.left[49] as u32]);
    assert_eq!(r, vec![m.right[3] as u32, m.right[0] as u32, m.right[49] as u32]);
    let (x0, l0, r0) = m.batch(&[]);
    assert_eq!((x0.shape(), l0.len(), r0.len()), (&[0usize, 1, 28, 28][..], 0, 0));
}

#[test]
fn deterministic_per_seed() {
    let s = noisy_split(200);
    let a = build(&s, 42, None);
    let b = build(&s, 42, None);
    assert_eq!(a, b);
    let c = build(&s, 43, None);
    assert_ne!(a.right, c.right, "another seed draws other partners");
    assert_ne!(a.images, c.images);
    assert_eq!(a.left, c.left);
    // The partners look uniform: every label shows up on the right.
    let mut seen = [false; 10];
    a.right.iter().for_each(|&r| seen[r as usize] = true);
    assert!(seen.iter().all(|&x| x));
}

#[test]
fn hand_checked_single_image() {
    // One image, so the partner is itself: bright pixel at (0,0) and a mid one at (1,1).
    // Canvas: left copy at (0,0)=255, (1,1)=128; right copy at (6,6)=255, (7,7)=128.
    // Resize rows/cols 0..28 read canvas 0,1,3,4,5,7,...: (0,0)→(0,0), (1,1)→(1,1), canvas (7,7)→(5,5);
    // canvas row/col 6 is never sampled, so the right copy's 255 disappears.
    let s = split_of(&[(&[((0, 0), 255), ((1, 1), 128)], 4)]);
    let m = build(&s, 0, None);
    assert_eq!((m.left[0], m.right[0]), (4, 4));
    assert_eq!(nonzero(&m.images), vec![((0, 0), norm(255)), ((1, 1), norm(128)), ((5, 5), norm(128))]);

    // Bottom-right edge, pixels (26,26)=200 and (27,27)=100. Left copy: canvas (26,26) → output (20,20),
    // canvas (27,27) → output (21,21). Right copy: canvas (32,32) → output (25,25); canvas (33,33) is
    // dropped by the resize. Output (27,27) reads canvas (35,35), outside both digits.
    let s = split_of(&[(&[((26, 26), 200), ((27, 27), 100)], 1)]);
    let m = build(&s, 0, None);
    assert_eq!(nonzero(&m.images), vec![((20, 20), norm(200)), ((21, 21), norm(100)), ((25, 25), norm(200))]);

    // Values are normalised exactly as (v/255 − 0.1307)/0.3081.
    assert!((norm(0) - (-0.1307 / 0.3081)).abs() < 1e-6);
    assert!((norm(255) - ((1.0 - 0.1307) / 0.3081)).abs() < 1e-6);
    assert!((m.images[0] - (-0.424_213)).abs() < 1e-5);
}

#[test]
fn overlap_takes_the_max() {
    // A: pixel (7,7)=150 (label 1). B: pixel (1,1)=60 (label 2). Alternating, so every pairing occurs.
    // Pair (A left, B right): canvas (7,7) = max(A(7,7)=150, B(1,1)=60) = 150 → output (5,5) only
    // (sum would give 210, paste-over 60).
    // Pair (B, A): B's (1,1) → output (1,1)=60; A's (7,7) at canvas (13,13) → output (10,10)=150.
    // Pair (A, A): output (5,5)=150 (left) and (10,10)=150 (right).
    // Pair (B, B): output (1,1)=60 (left) and canvas (7,7) → (5,5)=60 (right).
    let a: Pixels = &[((7, 7), 150)];
    let b: Pixels = &[((1, 1), 60)];
    let items: Vec<_> = (0..64).map(|i| if i % 2 == 0 { (a, 1u8) } else { (b, 2u8) }).collect();
    let s = split_of(&items);
    let m = build(&s, 9, None);
    let mut pairs_seen = std::collections::BTreeSet::new();
    for i in 0..m.len() {
        let img = &m.images[i * PX..(i + 1) * PX];
        let expected = match (m.left[i], m.right[i]) {
            (1, 2) => vec![((5, 5), norm(150))],
            (2, 1) => vec![((1, 1), norm(60)), ((10, 10), norm(150))],
            (1, 1) => vec![((5, 5), norm(150)), ((10, 10), norm(150))],
            (2, 2) => vec![((1, 1), norm(60)), ((5, 5), norm(60))],
            p => panic!("unexpected labels {p:?}"),
        };
        assert_eq!(nonzero(img), expected, "example {i}, labels ({}, {})", m.left[i], m.right[i]);
        pairs_seen.insert((m.left[i], m.right[i]));
    }
    assert_eq!(pairs_seen.len(), 4, "all four pairings occur with 64 draws");
}

#[test]
fn real_multimnist_if_present() {
    let Some(dir) = real_mnist_dir() else { return };
    let test = load_mnist(&dir, Split::Test).unwrap();
    let m = build(&test, 1, Some(1000));
    assert_eq!(m.len(), 1000);
    assert_eq!(m.left[..], test.labels[..1000]);
    assert!(m.left.iter().chain(&m.right).all(|&l| l <= 9));
    let n = m.images.len() as f64;
    let mean = m.images.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = m.images.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    // Measured: mean ≈ 0.04, std ≈ 1.04 (close to plain MNIST's 0 and 1: the second digit adds ink, the
    // 36→28 shrink removes some).
    eprintln!("MultiMNIST (1000 test pairs): mean {mean:.4}, std {:.4}", var.sqrt());
    assert!(mean.is_finite() && var.is_finite());
    assert!((-0.2..0.4).contains(&mean), "mean of normalised images {mean}");
    assert!((0.7..1.6).contains(&var.sqrt()), "std of normalised images {}", var.sqrt());

    // The full training set: timing for the record.
    let train = load_mnist(&dir, Split::Train).unwrap();
    let t = std::time::Instant::now();
    let full = build(&train, 0, None);
    eprintln!("built {} MultiMNIST training images in {:.3} s", full.len(), t.elapsed().as_secs_f64());
    assert_eq!(full.len(), 60000);
}
