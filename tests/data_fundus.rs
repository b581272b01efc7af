//! The built-in synthetic fundus dataset: determinism, shapes, label geometry, label statistics and
//! normalisation.

use mtcool::data::fundus::{FundusConfig, FundusSet, Mask, ARTERY, CUP, DISC_RIM, VCDR_THRESHOLD, VEIN};

fn cfg(n: usize, seed: u64) -> FundusConfig {
    FundusConfig { n, seed, ..FundusConfig::default() }
}

#[test]
fn deterministic_in_seed_and_independent_of_n() {
    let a = FundusSet::generate(&cfg(5, 7));
    let b = FundusSet::generate(&cfg(5, 7));
    assert_eq!(a, b);
    let c = FundusSet::generate(&cfg(5, 8));
    assert_ne!(a.images, c.images);
    assert_ne!(a.cup_disc, c.cup_disc);
    assert_ne!(a.artery_vein, c.artery_vein);

    let big = FundusSet::generate(&cfg(50, 7));
    let px = 64 * 64;
    assert_eq!(a.images[..], big.images[..5 * 3 * px]);
    assert_eq!(a.cup_disc[..], big.cup_disc[..5 * px]);
    assert_eq!(a.artery_vein[..], big.artery_vein[..5 * px]);
    assert_eq!(a.vessel[..], big.vessel[..5 * px]);
    assert_eq!(a.glaucoma[..], big.glaucoma[..5]);
    assert_eq!(a.vcdr[..], big.vcdr[..5]);
    for i in 0..5 {
        assert_eq!(a.raw_rgb(i), big.raw_rgb(i));
    }
}

#[test]
fn shapes_and_batches() {
    for size in [32, 64, 96] {
        let set = FundusSet::generate(&FundusConfig { size, n: 4, ..FundusConfig::default() });
        let px = size * size;
        assert_eq!(set.size, size);
        assert_eq!(set.len(), 4);
        assert!(!set.is_empty());
        assert_eq!(set.images.len(), 4 * 3 * px);
        for v in [&set.cup_disc, &set.artery_vein, &set.vessel] {
            assert_eq!(v.len(), 4 * px);
        }
        assert_eq!((set.glaucoma.len(), set.vcdr.len()), (4, 4));

        let x = set.image_batch(&[2, 0]);
        assert_eq!(x.shape(), &[2, 3, size, size]);
        assert_eq!(x.data()[..3 * px], set.images[2 * 3 * px..3 * 3 * px]);
        assert_eq!(x.data()[3 * px..], set.images[..3 * px]);
        for which in [Mask::CupDisc, Mask::ArteryVein, Mask::Vessel] {
            let m = set.mask_batch(which, &[2, 0]);
            assert_eq!(m.len(), 2 * px);
            let want: Vec<u32> = set.mask(which, 2).iter().chain(set.mask(which, 0)).map(|&v| v as u32).collect();
            assert_eq!(m, want);
        }
        let rgb = set.raw_rgb(1);
        assert_eq!(rgb.len(), 3 * px);
        // Channel c of pixel p of the raw image corresponds to the normalised one.
        let p = px / 2 + size / 2;
        for c in 0..3 {
            let back = (set.images[3 * px + c * px + p] * mtcool::data::fundus::STD[c] + mtcool::data::fundus::MEAN[c])
                * 255.0;
            assert!((back - rgb[3 * p + c] as f32).abs() < 0.01);
        }
        // The centre of the image is inside the field of view, the corners are black.
        assert!(rgb[3 * p..3 * p + 3].iter().any(|&v| v > 40));
        assert!(rgb[..3].iter().all(|&v| v < 20));
    }
}

/// Number of rows holding at least one pixel with `label >= id`.
fn rows_with(mask: &[u8], size: usize, id: u8) -> usize {
    mask.chunks_exact(size).filter(|row| row.iter().any(|&v| v >= id)).count()
}

#[test]
fn label_geometry() {
    for size in [32, 64] {
        let set = FundusSet::generate(&FundusConfig { size, n: 200, seed: 3, ..FundusConfig::default() });
        for i in 0..set.len() {
            let cd = set.mask(Mask::CupDisc, i);
            let av = set.mask(Mask::ArteryVein, i);
            let ves = set.mask(Mask::Vessel, i);
            for class in [DISC_RIM, CUP] {
                assert!(cd.contains(&class), "image {i} ({size}²) lacks cup/disc class {class}");
            }
            for class in [ARTERY, VEIN] {
                assert!(av.contains(&class), "image {i} ({size}²) lacks vessel class {class}");
            }
            assert!(cd.iter().all(|&v| v <= CUP) && av.iter().all(|&v| v <= VEIN));
            for (&v, &a) in ves.iter().zip(av) {
                assert_eq!(v, (a > 0) as u8);
            }
            // The cup lies inside the disc with a rim around it: at 64² a healthy cup (rim at least
            // 1.3 px wide by construction) never touches the background (4-neighbourhood). Glaucomatous
            // rims and 32² discs may be thinner than a pixel.
            if size == 64 && set.vcdr[i] <= VCDR_THRESHOLD {
                for y in 0..size {
                    for x in 0..size {
                        if cd[y * size + x] != CUP {
                            continue;
                        }
                        let nb = [(x.wrapping_sub(1), y), (x + 1, y), (x, y.wrapping_sub(1)), (x, y + 1)];
                        for (nx, ny) in nb {
                            assert!(
                                nx < size && ny < size && cd[ny * size + nx] != 0,
                                "image {i}: cup touches background"
                            );
                        }
                    }
                }
            }
            // The vertical cup-to-disc ratio measured on the mask matches the stored one to a pixel.
            let (cup_rows, disc_rows) = (rows_with(cd, size, CUP) as f32, rows_with(cd, size, DISC_RIM) as f32);
            let v = set.vcdr[i];
            assert!(
                (cup_rows - v * disc_rows).abs() <= 1.0 + v,
                "image {i} ({size}²): cup {cup_rows} rows, disc {disc_rows} rows, vcdr {v}"
            );
        }
    }
}

#[test]
fn glaucoma_rate_and_label_noise() {
    let set = FundusSet::generate(&cfg(2000, 11));
    let n = set.len() as f32;
    let rate = set.glaucoma.iter().map(|&g| g as f32).sum::<f32>() / n;
    assert!((0.05..=0.16).contains(&rate), "glaucoma rate {rate}");
    let disagree = set.glaucoma.iter().zip(&set.vcdr).filter(|(&g, &v)| (g == 1) != (v > VCDR_THRESHOLD)).count();
    let noise = disagree as f32 / n;
    assert!((0.015..=0.05).contains(&noise), "label noise {noise}");
    let true_rate = set.vcdr.iter().filter(|&&v| v > VCDR_THRESHOLD).count() as f32 / n;
    assert!((0.07..=0.13).contains(&true_rate), "true glaucoma rate {true_rate}");

    let clean = FundusSet::generate(&FundusConfig { label_noise: 0.0, ..cfg(300, 11) });
    for (&g, &v) in clean.glaucoma.iter().zip(&clean.vcdr) {
        assert_eq!(g == 1, v > VCDR_THRESHOLD);
        assert!((0.3..0.85).contains(&v) && !(0.55..0.62).contains(&v), "vcdr {v}");
    }
}

/// Area under the ROC curve of `score` for the 0/1 `labels` (ties count one half).
fn auroc(score: &[f32], labels: &[u8]) -> f64 {
    let (mut num, mut pairs) = (0.0, 0.0);
    for (sp, _) in score.iter().zip(labels).filter(|(_, &l)| l == 1) {
        for (sn, _) in score.iter().zip(labels).filter(|(_, &l)| l == 0) {
            num += if sp > sn {
                1.0
            } else if sp == sn {
                0.5
            } else {
                0.0
            };
            pairs += 1.0;
        }
    }
    num / pairs
}

/// Glaucoma is predictable from the cup: the vCDR measured on the cup/disc mask ranks the labels with an
/// AUROC near 1 without label noise and, with the default 3% of flipped labels, still well above 0.85
/// (the flipped healthy eyes are about a fifth of the positives and rank at random).
#[test]
fn glaucoma_predictable_from_cup() {
    for (noise, min_auc) in [(0.0, 0.99), (0.03, 0.86)] {
        let set = FundusSet::generate(&FundusConfig { label_noise: noise, ..cfg(1500, 21) });
        let measured: Vec<f32> = (0..set.len())
            .map(|i| {
                let cd = set.mask(Mask::CupDisc, i);
                rows_with(cd, 64, CUP) as f32 / rows_with(cd, 64, DISC_RIM) as f32
            })
            .collect();
        let auc = auroc(&measured, &set.glaucoma);
        assert!(auc >= min_auc, "label noise {noise}: AUROC of the measured vCDR {auc}");
        println!("label noise {noise}: AUROC of the measured vCDR {auc:.3}");
    }
}

#[test]
fn images_are_normalised() {
    let set = FundusSet::generate(&cfg(1000, 5));
    assert!(set.images.iter().all(|v| v.is_finite()));
    let px = 64 * 64;
    for c in 0..3 {
        let (mut s, mut s2, mut k) = (0f64, 0f64, 0f64);
        for img in set.images.chunks_exact(3 * px) {
            for &v in &img[c * px..(c + 1) * px] {
                s += v as f64;
                s2 += (v as f64) * (v as f64);
                k += 1.0;
            }
        }
        let mean = s / k;
        let std = (s2 / k - mean * mean).sqrt();
        assert!(mean.abs() < 0.05, "channel {c}: mean {mean}");
        assert!((std - 1.0).abs() < 0.05, "channel {c}: std {std}");
    }
}

/// Prints the per-channel statistics of the unnormalised pixels (used to set MEAN and STD).
#[test]
#[ignore]
fn print_channel_stats() {
    let set = FundusSet::generate(&cfg(4000, 0));
    let px = 64 * 64;
    for c in 0..3 {
        let (mut s, mut s2, mut k) = (0f64, 0f64, 0f64);
        for i in 0..set.len() {
            let rgb = set.raw_rgb(i);
            for p in 0..px {
                let v = rgb[3 * p + c] as f64 / 255.0;
                s += v;
                s2 += v * v;
                k += 1.0;
            }
        }
        let mean = s / k;
        println!("channel {c}: mean {mean:.4} std {:.4}", (s2 / k - mean * mean).sqrt());
    }
}

/// Times the generation of 1000 images of 64².
#[test]
#[ignore]
fn time_generation() {
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let set = FundusSet::generate(&cfg(1000, 1));
        println!("1000 images of 64²: {:?} ({} images)", t.elapsed(), set.len());
    }
}

/// Writes a contact sheet of 8 samples (image, cup/disc + vessel contours, artery/vein colours) to
/// `$FUNDUS_SAMPLES` or /tmp/fundus_samples.png.
#[test]
#[ignore]
fn write_samples() {
    use mtcool::viz;
    let size = std::env::var("FUNDUS_SIZE").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    let n = std::env::var("FUNDUS_N").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let set = FundusSet::generate(&FundusConfig { size, n, seed: 0, ..FundusConfig::default() });
    let mut tiles = Vec::new();
    for i in 0..set.len() {
        let rgb = set.raw_rgb(i);
        let cd = set.mask(Mask::CupDisc, i);
        tiles.push(rgb.clone());
        tiles.push(viz::contour_overlay(&rgb, size, size, &[(cd, DISC_RIM, [0, 255, 0]), (cd, CUP, [0, 128, 255])]));
        tiles.push(viz::label_colors(set.mask(Mask::ArteryVein, i), &[[0, 0, 0], [255, 60, 60], [60, 120, 255]]));
        println!("sample {i}: glaucoma {} vcdr {:.2}", set.glaucoma[i], set.vcdr[i]);
    }
    let scale = std::env::var("FUNDUS_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let (img, w, h) = viz::grid(&tiles, size, size, 6, scale);
    let path = std::env::var("FUNDUS_SAMPLES").unwrap_or_else(|_| "/tmp/fundus_samples.png".into());
    viz::write_png(&path, &img, w, h).unwrap();
}
