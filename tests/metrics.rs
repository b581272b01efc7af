//! Evaluation metrics on hand-made predictions: AUROC, sensitivity at a specificity, the arg-max
//! confusion metrics of a binary classifier and the Dice of nested regions.

use mtcool::metrics::{auroc, sensitivity_at_specificity, MetricKind, Regions, TaskMetrics};
use mtcool::Tensor;

#[test]
fn auroc_hand_computed() {
    // Positives 0.9, 0.4; negatives 0.8, 0.3, 0.2: of the 6 (pos, neg) pairs, 0.9 beats all 3, 0.4
    // beats 2 → 5/6. A tie counts half.
    let s = [(0.9, 1), (0.4, 1), (0.8, 0), (0.3, 0), (0.2, 0)];
    assert!((auroc(&s) - 5.0 / 6.0).abs() < 1e-12);
    assert!((auroc(&[(0.5, 1), (0.5, 0)]) - 0.5).abs() < 1e-12);
    assert!(auroc(&[(0.5, 1), (0.7, 1)]).is_nan(), "undefined without negatives");
}

#[test]
fn sensitivity_at_specificity_hand_computed() {
    // 4 positives (0.95, 0.9, 0.6, 0.3), 10 negatives (0.8, 0.5, 0.4 and seven at 0.1).
    let mut s = vec![(0.95, 1), (0.9, 1), (0.6, 1), (0.3, 1), (0.8, 0), (0.5, 0), (0.4, 0)];
    s.extend(std::iter::repeat_n((0.1, 0), 7));
    // Thresholds: ≥0.9 → sen 2/4, spe 1; ≥0.8 → spe 0.9; ≥0.6 → sen 3/4, spe 0.9; ≥0.5 → spe 0.8.
    assert_eq!(sensitivity_at_specificity(&s, 0.85), 0.75);
    assert_eq!(sensitivity_at_specificity(&s, 0.95), 0.5);
    assert_eq!(sensitivity_at_specificity(&s, 0.0), 1.0);
    // Tied scores turn positive together: a positive tied with a negative cannot be had alone.
    let tied = [(0.7, 1), (0.7, 0), (0.2, 0)];
    assert_eq!(sensitivity_at_specificity(&tied, 0.9), 0.0);
    assert!(sensitivity_at_specificity(&[(0.1, 0)], 0.85).is_nan());
}

#[test]
fn binary_classification_metrics_at_the_argmax() {
    // Logits for 4 items, 2 classes: predictions 1, 0, 1, 0 against labels 1, 1, 0, 0.
    let logits = Tensor::new(&[4, 2], vec![0., 2., 1., 0., 0., 3., 2., 0.]).unwrap();
    let mut m = TaskMetrics::new(MetricKind::Classify, 2);
    m.update(&logits, &[1, 1, 0, 0]);
    let r = m.finish();
    assert_eq!(r["acc"], 0.5);
    assert_eq!(r["sensitivity"], 0.5);
    assert_eq!(r["specificity"], 0.5);
    // P(class 1): item 2 (negative, logit gap 3) scores above item 0 (positive, gap 2): AUROC 0.5.
    assert!((r["auroc"] - 0.5).abs() < 1e-12);
    assert!(r.contains_key("sen_at_spe85"));
}

#[test]
fn nested_region_dice() {
    // 1 image, 4 pixels, 3 classes (0 background, 1 disc only, 2 cup ⊂ disc). Truth 0,1,2,2; predicted
    // 0,2,2,1. Disc (label ≥ 1): truth {1,2,3}, pred {1,2,3} → Dice 1. Cup (≥ 2): truth {2,3}, pred
    // {1,2} → tp 1, fp 1, fn 1 → Dice 0.5.
    let mut logits = vec![0f32; 3 * 4];
    for (px, class) in [0usize, 2, 2, 1].into_iter().enumerate() {
        logits[class * 4 + px] = 5.0;
    }
    let logits = Tensor::new(&[1, 3, 2, 2], logits).unwrap();
    let mut m = TaskMetrics::new(MetricKind::Segment(Regions::nested(&["disc", "cup"])), 3);
    m.update(&logits, &[0, 1, 2, 2]);
    let r = m.finish();
    assert_eq!(r["dice_disc"], 1.0);
    assert_eq!(r["dice_cup"], 0.5);
    assert_eq!(r["pixel_acc"], 0.5);
}
