//! Evaluation metrics, accumulated batch by batch.
//! - classification: accuracy; for two classes also AUROC (of the softmax probability of class 1),
//!   sensitivity and specificity (at the arg-max decision), and the sensitivity at 85 % specificity
//!   (`sen_at_spe85`, REFUGE's reference sensitivity: a fixed operating point on the ROC curve, so it
//!   does not move with the calibration of the arg-max boundary);
//!   With a decision threshold chosen elsewhere (`finish_at`, the validation split's `threshold`),
//!   also the threshold and the accuracy, sensitivity and specificity of "P(class 1) ≥ threshold";
//! - segmentation: pixel accuracy, and per named region Dice (= F1) and one-vs-rest pixel accuracy;
//! - every task: the mean loss over the evaluated batches, when the caller adds it (`add_loss`).
//!   Regions are either nested (REFUGE: "disc" = label ≥ 1 includes the cup, "cup" = label ≥ 2) or
//!   per class ("artery" = label 1, "vein" = label 2).

use std::collections::BTreeMap;

use crate::Tensor;

/// How a segmentation task's labels form the regions that are scored.
#[derive(Clone, Debug, PartialEq)]
pub enum Regions {
    /// Region k (k ≥ 1) is every pixel with label ≥ k; names[k − 1] names it.
    Nested(Vec<String>),
    /// Region k (k ≥ 1) is every pixel with label k.
    PerClass(Vec<String>),
}

impl Regions {
    /// Nested regions named `names` (region k = label ≥ k).
    pub fn nested(names: &[&str]) -> Self {
        Regions::Nested(names.iter().map(|n| n.to_string()).collect())
    }

    /// One region per class k ≥ 1, named `names[k − 1]`.
    pub fn per_class(names: &[&str]) -> Self {
        Regions::PerClass(names.iter().map(|n| n.to_string()).collect())
    }
}

/// What one task's metrics are.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricKind {
    Classify,
    Segment(Regions),
}

/// Arg-max over dim 1 of [N, C] or [N, C, H, W] logits, one class per item in (n, h, w) order, with
/// the softmax probability of class 1 (for binary AUROC).
pub fn argmax_dim1(logits: &Tensor) -> (Vec<u32>, Vec<f32>) {
    let s = logits.shape();
    let (n, c, inner) = (s[0], s[1], s[2..].iter().product::<usize>());
    let d = logits.data();
    let mut pred = Vec::with_capacity(n * inner);
    let mut p1 = Vec::with_capacity(n * inner);
    for b in 0..n {
        for i in 0..inner {
            let at = |k: usize| d[(b * c + k) * inner + i];
            let best = (0..c).fold(0, |best, k| if at(k) > at(best) { k } else { best });
            pred.push(best as u32);
            if c >= 2 {
                let m = at(best);
                let z: f32 = (0..c).map(|k| (at(k) - m).exp()).sum();
                p1.push((at(1) - m).exp() / z);
            }
        }
    }
    (pred, p1)
}

/// Number of items whose arg-max over dim 1 equals the label ([N, C] or [N, C, H, W] logits).
pub fn count_correct(logits: &Tensor, labels: &[u32]) -> usize {
    crate::backend::cpu::loss::count_correct(logits, labels)
}

/// Area under the ROC curve of scores for positives (label 1) vs negatives, ties counted half.
pub fn auroc(scores: &[(f32, u32)]) -> f64 {
    let mut s: Vec<(f32, u32)> = scores.to_vec();
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pos = s.iter().filter(|x| x.1 == 1).count() as f64;
    let neg = s.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    // Sum of positive ranks (average rank for ties), Mann-Whitney U.
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < s.len() {
        let mut j = i;
        while j < s.len() && s[j].0 == s[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += avg_rank * s[i..j].iter().filter(|x| x.1 == 1).count() as f64;
        i = j;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// The ROC curve's corners: lowering the threshold t through the scores seen (highest first), the
/// decision "score ≥ t" after each score's items turn positive at once, as (t, sensitivity,
/// false-positive rate = 1 − specificity). None without positives or negatives.
fn roc_points(scores: &[(f32, u32)]) -> Option<Vec<(f32, f64, f64)>> {
    let mut s: Vec<(f32, u32)> = scores.to_vec();
    s.sort_by(|a, b| b.0.total_cmp(&a.0)); // highest score first
    let pos = s.iter().filter(|x| x.1 == 1).count() as f64;
    let neg = s.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    let (mut tp, mut fp, mut i, mut out) = (0.0, 0.0, 0, vec![]);
    while i < s.len() {
        let mut j = i;
        while j < s.len() && s[j].0 == s[i].0 {
            if s[j].1 == 1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        out.push((s[i].0, tp / pos, fp / neg));
        i = j;
    }
    Some(out)
}

/// The best sensitivity among the decisions "score ≥ t" whose specificity is at least `min_spe` (the
/// ROC curve read at that specificity; "nothing positive" always qualifies, with sensitivity 0).
/// NaN without positives or negatives.
pub fn sensitivity_at_specificity(scores: &[(f32, u32)], min_spe: f64) -> f64 {
    let Some(points) = roc_points(scores) else { return f64::NAN };
    points.iter().filter(|p| 1.0 - p.2 >= min_spe - 1e-12).fold(0.0f64, |best, p| best.max(p.1))
}

/// The decision threshold on P(class 1) that maximises Youden's J = sensitivity + specificity − 1 over
/// the decisions "score ≥ t" (t running over the scores seen; on ties of J the higher t). None without
/// positives or negatives.
pub fn youden_threshold(scores: &[(f32, u32)]) -> Option<f64> {
    let mut best = (f64::NEG_INFINITY, 0.0);
    for (t, sen, fpr) in roc_points(scores)? {
        let youden = sen - fpr;
        if youden > best.0 {
            best = (youden, t as f64);
        }
    }
    Some(best.1)
}

/// Accumulates one task's predictions over an evaluation pass.
#[derive(Clone, Debug)]
pub struct TaskMetrics {
    kind: MetricKind,
    classes: usize,
    /// confusion[true][pred] counts (items or pixels).
    confusion: Vec<Vec<u64>>,
    /// (P(class 1), label) per item, binary classification only.
    scores: Vec<(f32, u32)>,
    /// Σ batch-mean loss × batch items, and the items, if the caller adds losses.
    loss: (f64, usize),
}

impl TaskMetrics {
    pub fn new(kind: MetricKind, classes: usize) -> Self {
        TaskMetrics { kind, classes, confusion: vec![vec![0; classes]; classes], scores: vec![], loss: (0.0, 0) }
    }

    /// Counts a batch's mean loss over its `examples`.
    pub fn add_loss(&mut self, mean: f64, examples: usize) {
        self.loss.0 += mean * examples as f64;
        self.loss.1 += examples;
    }

    /// The decision threshold these predictions would choose (binary classification only; see
    /// `youden_threshold`).
    pub fn threshold(&self) -> Option<f64> {
        (self.kind == MetricKind::Classify && self.classes == 2).then(|| youden_threshold(&self.scores)).flatten()
    }

    pub fn update(&mut self, logits: &Tensor, labels: &[u32]) {
        let (pred, p1) = argmax_dim1(logits);
        assert_eq!(pred.len(), labels.len(), "one label per item");
        for (&p, &l) in pred.iter().zip(labels) {
            self.confusion[l as usize][p as usize] += 1;
        }
        if self.kind == MetricKind::Classify && self.classes == 2 {
            self.scores.extend(p1.iter().copied().zip(labels.iter().copied()));
        }
    }

    fn total(&self) -> u64 {
        self.confusion.iter().flatten().sum()
    }

    fn accuracy(&self) -> f64 {
        (0..self.classes).map(|k| self.confusion[k][k]).sum::<u64>() as f64 / self.total().max(1) as f64
    }

    /// (tp, fp, fn) of the region given by a predicate on labels.
    fn region_counts(&self, inside: impl Fn(usize) -> bool) -> (u64, u64, u64) {
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for t in 0..self.classes {
            for p in 0..self.classes {
                let n = self.confusion[t][p];
                match (inside(t), inside(p)) {
                    (true, true) => tp += n,
                    (false, true) => fp += n,
                    (true, false) => fn_ += n,
                    _ => {}
                }
            }
        }
        (tp, fp, fn_)
    }

    /// The finished metrics by name. Undefined ones (e.g. AUROC of a split with one class) are left out.
    pub fn finish(&self) -> BTreeMap<String, f64> {
        self.finish_at(None)
    }

    /// `finish`, plus for a binary classification task given a `threshold` (chosen on other data):
    /// `threshold`, and `acc_thr`, `sensitivity_thr`, `specificity_thr` of "P(class 1) ≥ threshold".
    pub fn finish_at(&self, threshold: Option<f64>) -> BTreeMap<String, f64> {
        let mut m = self.all_metrics();
        if let (Some(t), MetricKind::Classify, 2) = (threshold, &self.kind, self.classes) {
            let count = |label: u32, positive: bool| {
                self.scores.iter().filter(|&&(p, l)| l == label && (p as f64 >= t) == positive).count() as f64
            };
            let (tp, fn_, tn, fp) = (count(1, true), count(1, false), count(0, false), count(0, true));
            m.insert("threshold".into(), t);
            m.insert("acc_thr".into(), (tp + tn) / (tp + fn_ + tn + fp).max(1.0));
            m.insert("sensitivity_thr".into(), tp / (tp + fn_));
            m.insert("specificity_thr".into(), tn / (tn + fp));
        }
        if self.loss.1 > 0 {
            m.insert("loss".into(), self.loss.0 / self.loss.1 as f64);
        }
        m.retain(|_, v| v.is_finite());
        m
    }

    fn all_metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let total = self.total() as f64;
        match &self.kind {
            MetricKind::Classify => {
                m.insert("acc".into(), self.accuracy());
                if self.classes == 2 {
                    let c = &self.confusion;
                    let ratio = |a: u64, b: u64| if a + b == 0 { f64::NAN } else { a as f64 / (a + b) as f64 };
                    m.insert("sensitivity".into(), ratio(c[1][1], c[1][0]));
                    m.insert("specificity".into(), ratio(c[0][0], c[0][1]));
                    m.insert("auroc".into(), auroc(&self.scores));
                    m.insert("sen_at_spe85".into(), sensitivity_at_specificity(&self.scores, 0.85));
                }
            }
            MetricKind::Segment(regions) => {
                m.insert("pixel_acc".into(), self.accuracy());
                let (names, nested) = match regions {
                    Regions::Nested(n) => (n, true),
                    Regions::PerClass(n) => (n, false),
                };
                for (k, name) in names.iter().enumerate().map(|(i, n)| (i + 1, n)) {
                    let (tp, fp, fn_) = self.region_counts(|label| if nested { label >= k } else { label == k });
                    let dice = if tp + fp + fn_ == 0 { 1.0 } else { 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64 };
                    m.insert(format!("dice_{name}"), dice);
                    m.insert(format!("acc_{name}"), (total - (fp + fn_) as f64) / total.max(1.0));
                }
            }
        }
        m
    }
}
